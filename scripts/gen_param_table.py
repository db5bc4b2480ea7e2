#!/usr/bin/env python3
"""Rewrite README.md's parameter table (between <!-- params:begin --> and <!-- params:end -->) from
dposer_ros/ros/params.py. `--check`: change nothing, exit 1 when the table is out of date."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dposer_ros.defaults import update_readme  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the table is out of date, change nothing")
    args = parser.parse_args()
    text = args.readme.read_text()
    new = update_readme(text)
    if new == text:
        return 0
    if args.check:
        print(f"{args.readme}: parameter table out of date; run scripts/gen_param_table.py", file=sys.stderr)
        return 1
    args.readme.write_text(new)
    print(f"{args.readme}: parameter table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
