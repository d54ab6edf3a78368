"""A ringmux-serve child process on a free 127.0.0.1 port, and its memory as the kernel
counts it (/proc/PID/status)."""
import os
import select
import signal
import subprocess
import tempfile
import time

# How long ringmux-serve may take to start listening, and to exit on SIGTERM.
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class ServerError(Exception):
    """ringmux-serve did not start (bad option, no port) or died."""


class Server:
    def __init__(self, build_dir, args=()):
        self.binary = os.path.join(build_dir, "tools", "ringmux-serve")
        self.args = list(args)
        # stderr goes to a file (read on failure), stdout to a pipe: the server writes one
        # line when it listens and one when it exits.
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([self.binary, "--listen=127.0.0.1:0", *self.args], stdout=subprocess.PIPE,
                                     stderr=self.stderr)
        self.port = self._read_port()

    def _read_port(self):
        line = b""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.proc.stdout], [], [], remaining)[0]:
                self.stop()
                raise ServerError(f"ringmux-serve {' '.join(self.args)} printed no port within {START_TIMEOUT_S} s")
            byte = os.read(self.proc.stdout.fileno(), 1)
            if not byte:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
                raise ServerError(f"ringmux-serve {' '.join(self.args)} exited with {self.proc.returncode}: "
                                  f"{self.stderr_text().strip()}")
            line += byte
        words = line.decode().split()
        if "port" not in words:
            raise ServerError(f"ringmux-serve said {line!r}, not its port")
        return int(words[words.index("port") + 1])

    def status_kib(self, field):
        """A field of /proc/PID/status in KiB (VmRSS: resident now, VmHWM: its peak)."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise ServerError(f"no {field} in /proc/{self.proc.pid}/status (the server exited?)")

    def rss_bytes(self):
        return self.status_kib("VmRSS") * 1024

    def rss_peak_bytes(self):
        return self.status_kib("VmHWM") * 1024

    def reset_peak(self):
        """Starts VmHWM again from the current RSS (/proc/PID/clear_refs, value 5)."""
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as clear:
            clear.write("5")

    def alive(self):
        return self.proc.poll() is None

    def exit_description(self):
        code = self.proc.returncode
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def stderr_text(self):
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.stderr.close()
