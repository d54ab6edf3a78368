#!/usr/bin/env python3
"""Mutual TLS in the shipped tools, end to end, with certificates this test makes with the
openssl command in a temporary directory (a CA, a server and a client certificate, a
second CA with a client certificate of its own, an expired client certificate):
- ringmux-serve and ringmux-loadgen over mutual TLS 1.3 with --verify=1: every call and
  every streamed message verified, no error, also from two client loops; both say which
  TLS path they use; a pinned server name (--tls-peer-name) accepted, another refused;
- refused handshakes, each seen on both sides: the server writes one line naming the
  cause and keeps serving (a good client is served afterwards), the client names the
  cause (loadgen exits 1 with it, not with a deadline):
  a client without a certificate (openssl s_client), one from another CA, an expired one,
  a plaintext client at the TLS server, a TLS client at a plaintext server;
- resumes through ringmux-chaos --reset-every=100ms over TLS: verify finds nothing
  damaged, lost or repeated, and resumes are counted;
- a 3-member ringmux-serve --peers cluster over mutual TLS answers quorum calls;
- ringmux-serve --cpus=0,1 over TLS: loadgen's two own connections are served, verified,
  one on each loop (loop 0 hands the handshaken session to the loop that owns it);
- --tls-ktls=0 keeps the record layer in user space on both sides, and both tools say so;
- option errors: the three files go together, TLS with the tcp engine is refused, a
  --tls-ktls other than 0 or 1 or without the files is refused (exit 2), a file that
  cannot be loaded is named (exit 1).
usage: check_tls_tools.py BUILD_DIR"""
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from free_ports import free_ports
from kernel_tls import ktls_available

build = sys.argv[1]
loadgen = f"{build}/tools/ringmux-loadgen"
serve = f"{build}/tools/ringmux-serve"
chaos = f"{build}/tools/ringmux-chaos"
TIMEOUT_S = 60
failures = []


def check(ok, what, detail=""):
    if ok:
        print(f"ok: {what}")
    else:
        failures.append(f"{what}: {detail}")


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, text=True, timeout=TIMEOUT_S)


def make_ca(pki, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{pki}/{name}.key", "-out", f"{pki}/{name}.pem", "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def make_leaf(pki, name, ca, dates=None):
    """A leaf `name` signed by `ca` (DNS name `name` and IP 127.0.0.1); `dates` =
    (start, end) as YYYYMMDDHHMMSSZ for a certificate outside its validity window."""
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{pki}/{name}.key", "-out", f"{pki}/{name}.csr", "-subj", f"/CN={name}")
    Path(f"{pki}/{name}.ext").write_text(f"subjectAltName=DNS:{name},IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n")
    if dates is None:
        openssl("x509", "-req", "-in", f"{pki}/{name}.csr", "-CA", f"{pki}/{ca}.pem", "-CAkey", f"{pki}/{ca}.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{pki}/{name}.ext", "-out", f"{pki}/{name}.pem")
        return
    # `openssl ca` is the command that takes a start and end date.
    db = Path(f"{pki}/{ca}-db")
    db.mkdir(exist_ok=True)
    (db / "index.txt").write_text("")
    (db / "serial").write_text("1000\n")
    Path(f"{pki}/{ca}.cnf").write_text(
        f"[ca]\ndefault_ca=local\n[local]\ndatabase={db}/index.txt\nserial={db}/serial\nnew_certs_dir={db}\n"
        f"default_md=sha256\npolicy=any\ncopy_extensions=none\n[any]\ncommonName=supplied\n")
    openssl("ca", "-batch", "-config", f"{pki}/{ca}.cnf", "-cert", f"{pki}/{ca}.pem", "-keyfile", f"{pki}/{ca}.key",
            "-in", f"{pki}/{name}.csr", "-startdate", dates[0], "-enddate", dates[1], "-extfile", f"{pki}/{name}.ext",
            "-notext", "-out", f"{pki}/{name}.pem")


def tls(pki, leaf, ca="ca"):
    return [f"--tls-cert={pki}/{leaf}.pem", f"--tls-key={pki}/{leaf}.key", f"--tls-ca={pki}/{ca}.pem"]


class Server:
    """A ringmux-serve whose output is read line by line; stop() returns all of it."""

    def __init__(self, args):
        self.process = subprocess.Popen([serve, "--listen=127.0.0.1:0", "--duration=120s", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        line = self.process.stdout.readline()
        self.lines.append(line)
        match = re.search(r"port (\d+)", line)
        if not match:
            self.process.kill()
            raise RuntimeError(f"ringmux-serve did not say its port: {line!r}")
        self.port = int(match.group(1))

    def wait_for(self, pattern):
        """Reads lines until one matches (the server's output is bounded by its duration)."""
        for line in self.process.stdout:
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        return None

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(2)
        # Read through the text buffer (communicate would skip what readline buffered); the
        # server ends on SIGINT, or at its --duration at the latest.
        self.lines.append(self.process.stdout.read())
        self.process.wait(timeout=TIMEOUT_S)
        return "".join(self.lines)


def run_loadgen(port, args):
    result = subprocess.run([loadgen, "--host=127.0.0.1", f"--port={port}", "--output-format=json", *args],
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    jobs = json.loads(result.stdout)["jobs"] if result.stdout.strip().startswith("{") else []
    return result, (jobs[0] if jobs else {})


def verified_run_ok(result, job):
    r = job.get("ringmux", {})
    return (result.returncode == 0 and r.get("errors", 1) == 0 and r.get("verify_errors", 1) == 0 and
            r.get("verified_messages", 0) > 0)


with tempfile.TemporaryDirectory(prefix="ringmux-tls-tools-") as pki:
    make_ca(pki, "ca")
    make_ca(pki, "other-ca")
    make_leaf(pki, "server", "ca")
    make_leaf(pki, "client", "ca")
    make_leaf(pki, "intruder", "other-ca")
    make_leaf(pki, "expired", "ca", ("20200101000000Z", "20200102000000Z"))

    # Served over mutual TLS, verified.
    server = Server(tls(pki, "server"))
    try:
        check("TLS path" in "".join(server.lines) or server.wait_for("TLS 1.3") is not None,
              "ringmux-serve says which TLS path it uses", "".join(server.lines))
        for rw in ["unary", "write"]:
            result, job = run_loadgen(server.port, [*tls(pki, "client"), f"--rw={rw}", "--bs=4k", "--iodepth=4",
                                                    "--runtime=1", "--verify=1"])
            check(verified_run_ok(result, job) and "TLS 1.3, mutual certificates" in result.stderr,
                  f"loadgen --rw={rw} --verify=1 over mutual TLS: "
                  f"{job.get('ringmux', {}).get('verified_messages', 0)} messages verified, no error",
                  f"exit {result.returncode}, stderr {result.stderr!r}, job {job.get('ringmux')}")

        # Two client loops (one per CPU), each dialing its own TLS connection.
        result, job = run_loadgen(server.port, [*tls(pki, "client"), "--rw=unary", "--bs=64", "--iodepth=2",
                                                "--numjobs=2", "--cpus_allowed=0,1", "--group_reporting",
                                                "--runtime=1", "--verify=1"])
        check(verified_run_ok(result, job), "loadgen with two client loops (--cpus_allowed=0,1) over mutual TLS",
              f"exit {result.returncode}, stderr {result.stderr!r}, job {job.get('ringmux')}")

        # A pinned server name: the server's certificate carries DNS:server, not DNS:elsewhere.
        result, job = run_loadgen(server.port, [*tls(pki, "client"), "--tls-peer-name=server", "--rw=unary",
                                                "--bs=64", "--runtime=1"])
        check(result.returncode == 0 and job.get("ringmux", {}).get("errors", 1) == 0,
              "loadgen --tls-peer-name=server accepts the server's certificate",
              f"exit {result.returncode}, stderr {result.stderr!r}")
        result, job = run_loadgen(server.port, [*tls(pki, "client"), "--tls-peer-name=elsewhere", "--rw=unary",
                                                "--bs=64", "--runtime=1"])
        line = server.wait_for(r"acceptor: refused a new connection")
        message = job.get("ringmux", {}).get("error", "")
        check(result.returncode == 1 and "hostname mismatch" in message and line is not None and
              "refused by the peer" in line,
              f"loadgen --tls-peer-name=elsewhere refuses the server: '{message}'; server says "
              f"'{(line or '').strip()}'", f"exit {result.returncode}, loadgen {message!r}, server {line!r}")

        # A client without a certificate: OpenSSL's own client, since the tools always show one.
        # TLS 1.3: the client's side of the handshake is done before the server has checked
        # it; -ign_eof keeps s_client reading until the server's alert arrives.
        client = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-tls1_3",
                                 "-CAfile", f"{pki}/ca.pem", "-ign_eof"], input="", capture_output=True,
                                text=True, timeout=TIMEOUT_S)
        line = server.wait_for(r"acceptor: refused a new connection")
        check(line is not None and "did not return a certificate" in line and
              "certificate required" in client.stdout + client.stderr,
              "a client without a certificate is refused: server and client name the cause",
              f"server {line!r}, client {client.stdout[-400:]!r} {client.stderr[-400:]!r}")

        # Refused by our client's certificate, or by the bytes it speaks.
        for name, args, server_says, client_says in [
            ("a client certificate of another CA", tls(pki, "intruder")[:2] + [f"--tls-ca={pki}/ca.pem"],
             "unable to get local issuer certificate", "did not accept our certificate"),
            ("an expired client certificate", tls(pki, "expired"), "certificate has expired",
             "did not accept our certificate"),
            ("a plaintext client at the TLS server", [], "does not speak TLS", "is it a TLS server"),
        ]:
            result, job = run_loadgen(server.port, [*args, "--rw=unary", "--bs=64", "--runtime=1"])
            line = server.wait_for(r"acceptor: refused a new connection")
            message = job.get("ringmux", {}).get("error", "") + result.stderr
            check(result.returncode == 1 and line is not None and server_says in line and client_says in message and
                  "deadline" not in message,
                  f"{name} is refused: server says '{(line or '').strip()}', loadgen says "
                  f"'{job.get('ringmux', {}).get('error', '')}'",
                  f"exit {result.returncode}, server {line!r}, loadgen {message!r}")

        # The server kept serving through the refusals.
        result, job = run_loadgen(server.port, [*tls(pki, "client"), "--rw=unary", "--bs=64", "--runtime=1",
                                                "--verify=1"])
        check(verified_run_ok(result, job), "the TLS server still serves a good client after the refusals",
              f"exit {result.returncode}, stderr {result.stderr!r}")

        # Resumes over TLS through ringmux-chaos, verified.
        proxy = subprocess.Popen([chaos, "--listen=127.0.0.1:0", f"--upstream=127.0.0.1:{server.port}", "--seed=7",
                                  "--duration=60s", "--reset-every=100ms", "--slice=1-4096"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        proxy_port = int(re.search(r"listening on [\d.]+:(\d+)", proxy.stdout.readline()).group(1))
        try:
            result, job = run_loadgen(proxy_port, [*tls(pki, "client"), "--rw=write", "--bs=64k", "--size=256m",
                                                   "--runtime=20", "--verify=1"])
        finally:
            proxy.send_signal(2)
            proxy.communicate(timeout=TIMEOUT_S)
        r = job.get("ringmux", {})
        check(verified_run_ok(result, job) and r.get("resumes", 0) > 0 and r.get("verify_gaps", 1) == 0 and
              r.get("verify_duplicates", 1) == 0 and
              r.get("server_confirmed_bytes", 0) == r.get("client_sent_bytes", -1),
              f"over TLS through ringmux-chaos --reset-every=100ms: {r.get('resumes')} resumes, "
              f"{r.get('verified_messages')} messages verified, none damaged, lost or repeated",
              f"exit {result.returncode}, stderr {result.stderr[-600:]!r}, job {r}")
    finally:
        output = server.stop()
    ktls = ktls_available()
    check("TLS 1.3, mutual certificates" in output and
          (("record layer in the kernel (kTLS)" in output) if ktls else ("user-space record layer" in output)),
          f"ringmux-serve printed its TLS path ({'kTLS' if ktls else 'user space: no kTLS in this kernel'})",
          output[:400])

    # A TLS client at a plaintext server.
    plain = Server([])
    try:
        result, job = run_loadgen(plain.port, [*tls(pki, "client"), "--rw=unary", "--bs=64", "--runtime=1"])
        line = plain.wait_for(r"acceptor: no valid HELLO")
        message = job.get("ringmux", {}).get("error", "") + result.stderr
        check(result.returncode == 1 and line is not None and "the peer speaks TLS" in line and
              "during the TLS handshake" in message,
              f"a TLS client at a plaintext server: server says '{(line or '').strip()}', loadgen says "
              f"'{job.get('ringmux', {}).get('error', '')}'",
              f"exit {result.returncode}, server {line!r}, loadgen {message!r}")
    finally:
        plain.stop()

    # A cluster of three members over mutual TLS, called by quorum.
    ports = free_ports(3)
    peers = [f"127.0.0.1:{p}" for p in ports]
    for i in range(3):
        make_leaf(pki, f"member{i}", "ca")
    members, announced = [], []
    for i, port in enumerate(ports):
        others = ",".join(p for j, p in enumerate(peers) if j != i)
        members.append(subprocess.Popen([serve, f"--listen=127.0.0.1:{port}", f"--peers={others}", "--duration=60s",
                                         *tls(pki, f"member{i}")],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        for member in members:
            lines = member.stdout.readline() + member.stdout.readline()
            announced.append(lines)
            check("listening" in lines, "a TLS cluster member started", lines)
        result = subprocess.run([loadgen, "--rw=quorum", f"--peers={','.join(peers)}", "--quorum=all", "--bs=64",
                                 "--iodepth=4", "--runtime=1", "--deadline=2s", "--output-format=json",
                                 *tls(pki, "client")], capture_output=True, text=True, timeout=TIMEOUT_S)
        job = json.loads(result.stdout)["jobs"][0] if result.stdout.strip().startswith("{") else {}
        check(result.returncode == 0 and job.get("ringmux", {}).get("errors", 1) == 0 and
              job.get("write", {}).get("iops", 0) > 0,
              f"quorum=all over a 3-member TLS cluster: {job.get('write', {}).get('iops', 0):.0f} calls/s, no error",
              f"exit {result.returncode}, stderr {result.stderr!r}, job {job}")
    finally:
        for i, member in enumerate(members):
            member.send_signal(2)
            output = (announced[i] if i < len(announced) else "") + member.stdout.read()
            member.wait(timeout=TIMEOUT_S)
            sessions = re.search(r"sessions=(\d+)", output)
            check(sessions is not None and int(sessions.group(1)) >= 2 and "TLS 1.3" in output,
                  f"TLS member {i} kept its peer sessions (sessions={sessions.group(1) if sessions else None})",
                  output)

    # A TLS server of two loops: loop 0 runs every handshake and hands each session (its
    # socket and OpenSSL state) to the loop its HELLO names; loadgen's two own connections
    # carry consecutive route keys, one per loop. The final per-loop lines show both used.
    server = Server([*tls(pki, "server"), "--cpus=0,1"])
    try:
        result, job = run_loadgen(server.port, [*tls(pki, "client"), "--rw=unary", "--bs=64", "--iodepth=2",
                                                "--numjobs=2", "--own_connection", "--group_reporting",
                                                "--runtime=1", "--verify=1"])
    finally:
        output = server.stop()
    per_loop = {int(m.group(1)): (int(m.group(2)), int(m.group(3)))
                for m in re.finditer(r"ringmux-serve: loop (\d+): connections=(\d+) .*calls=(\d+)", output)}
    check(verified_run_ok(result, job) and sorted(per_loop) == [0, 1] and
          all(connections >= 1 and calls >= 1 for connections, calls in per_loop.values()),
          f"ringmux-serve --cpus=0,1 over TLS serves loadgen's two connections on both loops "
          f"(loop: (connections, calls) {per_loop})",
          f"exit {result.returncode}, stderr {result.stderr!r}, job {job.get('ringmux')}, server {output[-1500:]!r}")

    # --tls-ktls=0 on both sides: the record layer stays in user space whatever the kernel
    # has, both tools say so, and a verified run goes through.
    server = Server([*tls(pki, "server"), "--tls-ktls=0"])
    try:
        result, job = run_loadgen(server.port, [*tls(pki, "client"), "--tls-ktls=0", "--rw=unary", "--bs=64",
                                                "--runtime=1", "--verify=1"])
    finally:
        output = server.stop()
    off = "user-space record layer (OpenSSL; kTLS turned off by --tls-ktls=0)"
    check(verified_run_ok(result, job) and off in output and off in result.stderr,
          "--tls-ktls=0: both tools keep the record layer in user space and say so; a verified run goes through",
          f"exit {result.returncode}, stderr {result.stderr!r}, server {output[:400]!r}")

    # Option errors.
    for tool, args, code, expected in [
        (serve, [*tls(pki, "server"), "--tls-ktls=yes"], 2, "'yes' is not 0 or 1"),
        (loadgen, ["--tls-ktls=0", "--runtime=1"], 2, "'--tls-ktls' needs --tls-cert"),
        (serve, [f"--tls-cert={pki}/server.pem"], 2, "go together"),
        (serve, [*tls(pki, "server"), "--ioengine=tcp"], 2, "--tls-* needs --ioengine=ringmux"),
        (serve, [*tls(pki, "server")[:2], f"--tls-ca={pki}/missing.pem"], 1, "missing.pem"),
        (loadgen, [f"--tls-key={pki}/client.key", "--runtime=1"], 2, "go together"),
        (loadgen, [*tls(pki, "client"), "--ioengine=tcp", "--runtime=1"], 2, "the tcp engine"),
        (loadgen, [*tls(pki, "client")[:1], f"--tls-key={pki}/server.key", f"--tls-ca={pki}/ca.pem", "--runtime=1"],
         1, "private key"),
    ]:
        extra = ["--listen=127.0.0.1:0", "--duration=1s"] if tool == serve else []
        result = subprocess.run([tool, *extra, *args], capture_output=True, text=True, timeout=TIMEOUT_S)
        check(result.returncode == code and expected in result.stderr,
              f"{Path(tool).name} {' '.join(a.replace(pki, 'PKI') for a in args)}: exit {code}: "
              f"{result.stderr.strip()}", f"exit {result.returncode}, stderr {result.stderr!r}")

for failure in failures:
    print("FAIL:", failure)
sys.exit(1 if failures else 0)
