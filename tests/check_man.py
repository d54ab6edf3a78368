#!/usr/bin/env python3
"""Holds each tool's man page (docs/man/TOOL.1.in, as built) to its --help: the same NAME
line, the same options, the same default for each option whose --help states one
("Default: X." or "Required."), and the same EXIT STATUS. Also proves that --help reads
like a man page (NAME, SYNOPSIS, OPTIONS with a default for every option, EXIT STATUS)
and that groff renders each page without a warning.

Both texts are parsed the same way: the man page is rendered by groff to plain text, whose
layout (section headings at column 0, option tags at one indent, their text deeper) is
the layout --help copies.

usage: check_man.py BUILD_DIR"""
import re
import subprocess
import sys
from pathlib import Path

TIMEOUT_S = 30

# Per tool: whether its --help is held to the man-page layout, and options its man page
# documents that its --help does not list. Every tool's is, and lists them all.
TOOLS = {
    "ringmux-serve": {"man_layout": True, "help_lacks": set()},
    "ringmux-chaos": {"man_layout": True, "help_lacks": set()},
    "ringmux-echo": {"man_layout": True, "help_lacks": set()},
    "ringmux-loadgen": {"man_layout": True, "help_lacks": set()},
}
HEADING = re.compile(r"^[A-Z][A-Z ]*[A-Z]$")
TAG = re.compile(r"((?:-[a-zA-Z], )?--[a-z][a-z0-9_-]*(?:=\S*)?)(.*)$")
DEFAULT = re.compile(r"(Default: .+?\.|Required\.)(?:\s|$)")


def normalized(text):
    return " ".join(text.split())


def sections(text):
    """Section name -> its lines, for headings at column 0 (NAME, OPTIONS, ...)."""
    result, current = {}, None
    for line in text.splitlines():
        if HEADING.match(line):
            current = line
            result[current] = []
        elif current is not None:
            result[current].append(line)
    return result


def indent(line):
    return len(line) - len(line.lstrip(" "))


def parse_options(lines):
    """Option name -> the default its text states ('Default: X.' or 'Required.'), or None."""
    tags = [line for line in lines if indent(line) > 0 and line.strip().startswith("-")]
    if not tags:
        return {}
    item_indent = min(indent(line) for line in tags)
    options, names, body = {}, None, []

    def close():
        if names:
            found = DEFAULT.search(normalized(" ".join(body)))
            for name in names:
                options[name] = found.group(1) if found else None

    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        tag = TAG.match(stripped) if indent(line) == item_indent else None
        if tag:
            close()
            # The text may start beside the tag: groff puts a short tag's paragraph on its
            # line, and a column layout its description.
            names = re.findall(r"--[a-z][a-z0-9_-]*", tag.group(1))
            body = [tag.group(2)]
        elif indent(line) > item_indent and names:
            body.append(stripped)
        else:  # a heading inside OPTIONS ("Limits of each ringmux connection:")
            close()
            names, body = None, []
    close()
    return options


def parse_exit_status(lines):
    """Exit code -> its meaning."""
    result = {}
    for line in lines:
        match = re.match(r"^\s+(\d+)\s+(\S.*)$", line)
        if match:
            result[match.group(1)] = normalized(match.group(2))
    return result


def render(page):
    """The man page as plain text (long lines, no hyphenation, no overstrike), and groff's warnings."""
    command = ["groff", "-man", "-Tascii", "-rLL=250n", "-rHY=0", "-P-cbou", "-ww", str(page)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    return run.stdout, run.stderr.strip()


def check_tool(build, tool, config, failures):
    page = build / "docs" / "man" / (tool + ".1")
    if not page.exists():
        failures.append(f"{tool}: no man page at {page}")
        return
    help_run = subprocess.run([build / "tools" / tool, "--help"], capture_output=True, text=True, timeout=TIMEOUT_S)
    if help_run.returncode != 0:
        failures.append(f"{tool}: --help exits {help_run.returncode}")
        return
    man_text, warnings = render(page)
    if warnings:
        failures.append(f"{tool}: groff warns about {page.name}: {warnings}")
    help_sections, man_sections = sections(help_run.stdout), sections(man_text)
    help_options = parse_options(help_sections.get("OPTIONS", []))
    if not config["man_layout"]:
        help_options = parse_options(help_run.stdout.splitlines())
    man_options = parse_options(man_sections.get("OPTIONS", []))

    if config["man_layout"]:
        for section in ("NAME", "SYNOPSIS", "OPTIONS", "EXIT STATUS"):
            if section not in help_sections:
                failures.append(f"{tool}: --help has no {section} section")
        for name, default in help_options.items():
            if default is None and name not in ("--help", "--version"):
                failures.append(f"{tool}: --help gives {name} no default")
        help_name = normalized(" ".join(help_sections.get("NAME", [])))
        man_name = normalized(" ".join(man_sections.get("NAME", [])))
        if help_name != man_name:
            failures.append(f"{tool}: NAME differs: --help {help_name!r}, man {man_name!r}")
        help_exit = parse_exit_status(help_sections.get("EXIT STATUS", []))
        man_exit = parse_exit_status(man_sections.get("EXIT STATUS", []))
        if help_exit != man_exit:
            failures.append(f"{tool}: EXIT STATUS differs: --help {help_exit}, man {man_exit}")

    only_help = set(help_options) - set(man_options)
    only_man = set(man_options) - set(help_options) - config["help_lacks"]
    if only_help:
        failures.append(f"{tool}: options in --help but not in the man page: {sorted(only_help)}")
    if only_man:
        failures.append(f"{tool}: options in the man page but not in --help: {sorted(only_man)}")
    compared = 0
    for name, default in help_options.items():
        if default is None or name not in man_options:
            continue
        compared += 1
        if man_options[name] != default:
            failures.append(f"{tool}: {name}: --help says {default!r}, the man page {man_options[name]!r}")
    print(f"{tool}: {len(help_options)} options in --help, {len(man_options)} in the man page, "
          f"{compared} defaults compared")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    build = Path(sys.argv[1]).resolve()
    failures = []
    for tool, config in TOOLS.items():
        check_tool(build, tool, config, failures)
    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
