#!/usr/bin/env python3
"""Instructions per unary call by layer, from callgrind runs (perf/callgrind.sh).

  callgrind_split.py profile OUT.profile.json SKIP_THREAD_1 FILE...
      callgrind_annotate --inclusive=no (self cost by file:function [object]) of each
      per-thread output FILE, summed over the threads (the first one left out when
      SKIP_THREAD_1 is 1), written as {"functions": {key: Ir}, "spin": Ir} where spin is the
      inclusive cost of engine::Loop::spin_for_completions (from --inclusive=yes).
  callgrind_split.py calibrate DIR ROUNDS1 ROUNDS2 CHUNK...
      instructions per KiB of memcpy and XXH3_64bits for each block size, from
      DIR/calibrate.<chunk>.<rounds>.out (perf/callgrind_calibrate.c under callgrind).
  callgrind_split.py table DIR
      reads DIR/runs.txt (one line per measurement: name tree side engine bs depth calls1
      calls2; calls done and system calls of the two strace runs; pairs; calls done in each
      callgrind run) and DIR/<name>.<calls>.r<pair>.profile.json, and prints the markdown
      tables: per call = (Ir of the longer run - Ir of the shorter) / (their difference in
      calls done), split by layer, from the median pair; the same for the system calls.

Layers are told by object and, inside the ringmux binaries (built without debug info, so
callgrind knows no source files), by the demangled name: namespace, then for mux/ the class
or function, whose folder (session, link, rpc, workers) is listed below. The tree before
the mux redesign (e03af77) kept mux/ in one folder; its names map the same way, and its
Connection, which held both the link and the RPC glue, counts as link except for the
methods listed in MUX_OLD_RPC_METHODS.
"""
import json
import os
import re
import subprocess
import sys

LAYERS = ["engine/", "liburing", "mux/session", "mux/link", "mux/rpc", "replay/", "wire/", "base/",
          "tool", "libc+mimalloc", "xxhash", "other"]

# Classes and free functions of mux/, by the folder that holds them (the tree after the
# redesign; the older names that are gone are added to the folder their code moved to).
MUX_FOLDERS = {
    "mux/session": ["FloodGuard", "RecvWindow", "SendCredit", "Session", "SessionHandler", "StreamMachine",
                    "StreamObserver", "StreamTable", "StreamBinding", "flow", "scope_of", "error_from_status",
                    "category_name", "describe", "reset_error", "MuxErrorCategory", "mux_error_category"],
    "mux/link": ["Acceptor", "Backoff", "Connection", "ConnectionExtension", "ConnectionObserver", "Transport",
                 "SessionRegistry", "StreamService", "StreamTimer", "session_options_for", "random_session_id",
                 "IdHash", "fill_random", "jittered"],
    "mux/rpc": ["OrderGate", "OrderedStart", "Registry", "Responder", "RpcCharge", "UnaryCall", "UnaryResponder",
                "UnaryServerStream", "call", "release_order", "enter_order", "routed_request",
                "over_budget_message", "IdentifyStream"],
    "mux/workers": ["RemoteCaller", "SlotRing", "WorkerStream", "CreditTask"],
}
MUX_LAYER = {name: folder for folder, names in MUX_FOLDERS.items() for name in names}
MUX_OLD_RPC_METHODS = {"call", "order_enter", "order_release", "order_drain", "rpc_charge", "rpc_release"}

LINE = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$")
OBJECT = re.compile(r"^(.*) \[(/[^\]]*)\]$")


def annotate(path, inclusive):
    """(program total, {(object, file:function): Ir}) from callgrind_annotate."""
    text = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", "--threshold=100",
                           "--auto=no", path], check=True, capture_output=True, text=True).stdout
    total = 0
    functions = {}
    for line in text.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        ir = int(match.group(1).replace(",", ""))
        rest = match.group(2)
        if rest.startswith("PROGRAM TOTALS"):
            total = ir
            continue
        object_match = OBJECT.match(rest)
        name, obj = (object_match.group(1), object_match.group(2)) if object_match else (rest, "")
        key = obj + "\t" + name
        functions[key] = functions.get(key, 0) + ir
    return total, functions


# Functions whose callers are listed too: the copies, fills and checksums, which a large
# call is made of.
WATCHED = re.compile(r"memcpy|memmove|mempcpy|memset|XXH3_64bits|wire::checksum64\(")
CALLER = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+< (.*?)(?: \(\d[\d,]*x\))?(?: \[(/[^\]]*)\])?$")
CALLEE = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+\*  (.*)$")


def callers(path):
    """{watched function: {caller: inclusive Ir of its calls}} from --tree=caller."""
    text = subprocess.run(["callgrind_annotate", "--tree=caller", "--inclusive=yes", "--threshold=100", "--auto=no",
                           path], check=True, capture_output=True, text=True).stdout
    found = {}
    block = []
    for line in text.splitlines() + [""]:
        if line.strip():
            block.append(line)
            continue
        callee = next((CALLEE.match(entry) for entry in block if CALLEE.match(entry)), None)
        if callee and WATCHED.search(callee.group(2)):
            name = function_name("\t" + OBJECT.sub(r"\1", callee.group(2)))
            for entry in block:
                match = CALLER.match(entry)
                if match:
                    calling = function_name("\t" + match.group(2))
                    found.setdefault(name, {})
                    found[name][calling] = found[name].get(calling, 0) + int(match.group(1).replace(",", ""))
        block = []
    return found


def profile(out, skip_first, files):
    files = sorted(files)
    if skip_first and len(files) > 1:
        files = files[1:]
    summed = {}
    spin = 0
    total = 0
    watched = {}
    for path in files:
        thread_total, functions = annotate(path, inclusive=False)
        total += thread_total
        for key, ir in functions.items():
            summed[key] = summed.get(key, 0) + ir
        _, inclusive = annotate(path, inclusive=True)
        spin += sum(ir for key, ir in inclusive.items() if "engine::Loop::spin_for_completions(" in key)
        for name, calling in callers(path).items():
            for caller, ir in calling.items():
                watched.setdefault(name, {})
                watched[name][caller] = watched[name].get(caller, 0) + ir
    with open(out, "w") as f:
        json.dump({"total": total, "spin": spin, "threads": files, "functions": summed, "callers": watched}, f)


def ringmux_layer(name):
    """The layer of a function in a ringmux binary, from its demangled name."""
    # A lambda's body belongs to the function that wrote it (a loadgen lambda stored in a
    # base/ InlineFunction, a handler wrapped in a std::function): the name before the first
    # "::{lambda", without its argument list.
    name = name.replace("(anonymous namespace)", "{anonymous}")
    if "::{lambda" in name:
        name = strip_arguments(name.split("::{lambda", 1)[0])
        name = re.search(r"[\w:{}]*$", name).group(0)
    head = name
    namespaces = re.findall(r"ringmux::(\w+)::", head)
    if not namespaces:
        return "other"
    namespace = namespaces[0]
    if namespace in ("engine",):
        return "engine/"
    if namespace in ("wire", "replay"):
        return namespace + "/"
    if namespace in ("loadgen", "tools"):
        return "tool"
    if namespace == "mux":
        after = head[head.index("ringmux::mux::") + len("ringmux::mux::"):]
        after = after.replace("{anonymous}::", "")
        parts = re.match(r"(\w+)(?:::(\w+))?", after)
        first, second = parts.group(1), parts.group(2)
        if first == "Connection" and second in MUX_OLD_RPC_METHODS:
            return "mux/rpc"
        return MUX_LAYER.get(first, "mux/session" if first in ("Session",) else "other")
    if namespace in ("cluster",):
        return "other"
    return "base/"  # ringmux::Pool, ringmux::InlineFunction, assertions, memory


def layer_of(key):
    obj, name = key.split("\t", 1)
    base = os.path.basename(obj)
    if "valgrind_wait" in base or "valgrind_wait_poll" in name:
        return "harness"
    if base.startswith("libxxhash"):
        return "xxhash"
    if base.startswith("liburing"):
        return "liburing"
    if base.startswith(("libc.so", "libstdc++", "libm.so", "libgcc_s", "libmimalloc")):
        return "libc+mimalloc"
    if base.startswith("ringmux-"):
        function = name.split(":", 1)[1] if ":" in name else name
        return ringmux_layer(function)
    if obj == "" and name.startswith("./") and not name.startswith("./elf/"):
        return "libc+mimalloc"  # glibc code reached through an inlined file (no object named)
    return "other"  # the dynamic linker, valgrind's preloads


def function_name(key):
    """The function of a key without its file, argument list and clone or recursion marks."""
    name = key.split("\t", 1)[1]
    name = name.split(":", 1)[1] if ":" in name and not name.startswith("ringmux") else name
    name = re.sub(r"( \[clone [^\]]*\])+('\d+)?$|'\d+$", "", name)
    name = re.sub(r" const$", "", name)
    # Argument lists, inner ones too (a lambda inside a function), for a readable name.
    name = name.replace("operator()", "operator\0").replace("(anonymous namespace)", "{anonymous}")
    while True:
        shorter = re.sub(r"\([^()]*\)", "", name)
        if shorter == name:
            break
        name = shorter
    return name.replace("operator\0", "operator()").replace("{anonymous}", "(anonymous namespace)")


def strip_arguments(name):
    """NAME without the parenthesized argument list it ends with."""
    if not name.endswith(")"):
        return name
    depth = 0
    for index in range(len(name) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(name[index], 0)
        if depth == 0:
            return name[:index]
    return name


def table(directory):
    runs = []
    with open(os.path.join(directory, "runs.txt")) as f:
        for line in f:
            fields = line.split()
            if fields:
                runs.append(fields)
    print("| tree | side | engine | request = response | in flight | Ir / call | pairs: Ir / call | spin | "
          + " | ".join(LAYERS) + " | syscalls / call |")
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(LAYERS) + "---|")
    tops = []
    for fields in runs:
        label, tree, side, engine, bs, depth, calls1, calls2, traced1, sys1, traced2, sys2, pairs = fields[:13]
        done = fields[13:]
        measured = []
        for pair in range(int(pairs)):
            with open(os.path.join(directory, f"{label}.{calls1}.r{pair + 1}.profile.json")) as f:
                first = json.load(f)
            with open(os.path.join(directory, f"{label}.{calls2}.r{pair + 1}.profile.json")) as f:
                second = json.load(f)
            calls = int(done[2 * pair + 1]) - int(done[2 * pair])
            per_layer = {layer: 0.0 for layer in LAYERS + ["harness"]}
            per_function = {}
            for key in set(first["functions"]) | set(second["functions"]):
                delta = (second["functions"].get(key, 0) - first["functions"].get(key, 0)) / calls
                per_layer[layer_of(key)] += delta
                per_function[key] = delta
            per_call = sum(v for layer, v in per_layer.items() if layer != "harness")
            measured.append((per_call, per_layer, per_function, first, second, calls))
        # The median pair (by instructions per call) speaks for the row.
        measured.sort(key=lambda item: item[0])
        per_call, per_layer, per_function, first, second, calls = measured[len(measured) // 2]
        spin = (second["spin"] - first["spin"]) / calls
        syscalls = (float(sys2) - float(sys1)) / (int(traced2) - int(traced1))
        size = f"{int(bs) // 1048576} MiB" if int(bs) >= 1048576 else (f"{int(bs) // 1024} KiB" if int(bs) >= 1024 else f"{bs} B")
        cells = [f"{round(per_layer[layer]):,}" for layer in LAYERS]
        each = " / ".join(f"{item[0]:,.0f}" for item in measured)
        print(f"| {tree} | {side} | {engine} | {size} | {depth} | {per_call:,.0f} | {each} | {spin:,.0f} | "
              + " | ".join(cells) + f" | {syscalls:.2f} |")
        top = sorted(((key, ir) for key, ir in per_function.items() if layer_of(key) != "harness"),
                     key=lambda item: -item[1])[:8]
        copies = {}
        for name in set(first["callers"]) | set(second["callers"]):
            for caller in set(first["callers"].get(name, {})) | set(second["callers"].get(name, {})):
                delta = (second["callers"].get(name, {}).get(caller, 0)
                         - first["callers"].get(name, {}).get(caller, 0)) / calls
                # Every memcpy variant is one copy; checksum64 is listed by its callers and
                # XXH3_64bits under it.
                what = "memset" if "memset" in name else "memcpy" if "mem" in name else \
                    "checksum64" if "checksum64" in name else name
                if what == "XXH3_64bits" and "checksum64" in caller:
                    continue
                copies.setdefault(what, {})
                copies[what][caller] = copies[what].get(caller, 0) + delta
        tops.append((f"{tree} {side} {engine} {size}", per_call,
                     [(function_name(key), layer_of(key), ir) for key, ir in top], copies))
    print()
    print("Largest functions per call (self instructions, share of the call):")
    print()
    for title, per_call, top, _ in tops:
        listed = "; ".join(f"{name} [{layer}] {ir:,.0f} ({100 * ir / per_call:.0f} %)" for name, layer, ir in top)
        print(f"- {title}: {listed}")
    print()
    print("Copies and checksums per call by caller (inclusive instructions; shown when over 1 % of the call):")
    print()
    for title, per_call, _, copies in tops:
        for what, calling in sorted(copies.items()):
            total = sum(calling.values())
            if total < 0.01 * per_call:
                continue
            listed = "; ".join(f"{caller} {ir:,.0f}" for caller, ir in sorted(calling.items(), key=lambda item: -item[1])
                               if ir >= 0.005 * total)
            print(f"- {title}: {what} {total:,.0f} ({100 * total / per_call:.0f} %): {listed}")


def calibrate(chunks, rounds1, rounds2, directory):
    """Instructions per KiB of memcpy and XXH3_64bits by block size (callgrind_calibrate.c)."""
    print()
    print("What callgrind counts per KiB (perf/callgrind_calibrate.c, "
          f"{rounds2} - {rounds1} rounds of 1 MiB):")
    print()
    print("| block | memcpy Ir / KiB | XXH3_64bits Ir / KiB |")
    print("|---|---|---|")
    for chunk in chunks:
        counts = []
        for rounds in (rounds1, rounds2):
            _, functions = annotate(os.path.join(directory, f"calibrate.{chunk}.{rounds}.out"), inclusive=False)
            memcpy = sum(ir for key, ir in functions.items() if re.search(r"mem(cpy|move)", key.split("\t")[1]))
            xxh3 = sum(ir for key, ir in functions.items() if key.endswith(":XXH3_64bits"))
            counts.append((memcpy, xxh3))
        kib = (int(rounds2) - int(rounds1)) * 1024
        size = f"{int(chunk) // 1048576} MiB" if int(chunk) >= 1048576 else f"{int(chunk) // 1024} KiB"
        print(f"| {size} | {(counts[1][0] - counts[0][0]) / kib:,.0f} | {(counts[1][1] - counts[0][1]) / kib:,.0f} |")


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "profile":
        profile(sys.argv[2], sys.argv[3] == "1", sys.argv[4:])
    elif len(sys.argv) >= 6 and sys.argv[1] == "calibrate":
        calibrate(sys.argv[5:], sys.argv[3], sys.argv[4], sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "table":
        table(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
