"""A hostile-peer suite for ringmux-serve (issue 11): a raw-frame client written from
wire/SPEC.md, and cases driven from SPEC §2.1's order of checks and the hardening design's
resource model. Entry point: tests/check_hostile.py."""
