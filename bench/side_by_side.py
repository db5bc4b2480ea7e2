"""What the side-by-side latency benchmarks of one refiner setting share (bench/tilt_latency.py,
bench/keypoint_hold_latency.py): their arguments, the round-robin timing of the variants and the report."""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch


def arguments(doc: str, out: str, budget: float, flags: dict[str, str] | None = None) -> argparse.Namespace:
    """The shared arguments, and `flags` (name -> help) of the script's own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for flag, text in (flags or {}).items():
        parser.add_argument(flag, action="store_true", help=text)
    parser.add_argument("--prior", type=Path, default=Path("models/dposer_cpu/prior.pt"))
    parser.add_argument("--formats", default="coco17,h36m17")
    parser.add_argument("--persons", default="1,10", help="batch sizes")
    parser.add_argument("--budget", type=float, default=budget, help="seconds per format and batch size")
    parser.add_argument("--out", type=Path, default=Path(out))
    args = parser.parse_args()
    torch.set_num_threads(1)
    return args


def check_acts(refiners: dict, obs, previous, what: str, where: str) -> None:
    """Stop unless the "on" refiner's answer differs from the "off" one's for every body of the stream."""
    joints = {variant: refiners[variant](obs, previous).joints for variant in ("off", "on")}
    if not bool(((joints["on"] - joints["off"]).norm(dim=-1).amax(1) > 1e-3).all()):
        raise SystemExit(f"{where}: {what} does not act on every body of this stream")


def timed_rows(refiners: dict, obs, previous, budget: float, label: str, name: str, persons: int) -> list[dict]:
    """Every refiner of `refiners` (variant -> FewStepRefiner, the first the reference) run round-robin on the same
    warm-started frame (`dposer bench`'s `_cell`): one row per variant."""
    from dposer_ros.backends.bench import _cell, _stats

    runners = {variant: ((lambda r=r: r(obs, previous)), None) for variant, r in refiners.items()}
    times = _cell(runners, budget, 20, 100000)
    reference = next(iter(refiners))
    base = _stats(times[reference][0])[0]
    rows = []
    for variant, (lat, _) in times.items():
        p50, p99, _ = _stats(lat)
        rows.append({"format": name, "persons": persons, label: variant, "p50 ms": round(p50, 1),
                     "p99 ms": round(p99, 1), f"p50 / {reference}": round(p50 / base, 2), "calls": len(lat)})
    return rows


def report(rows: list[dict], out: Path, backend: str, command: str) -> None:
    """Write the rows (with the machine, date and command) to `out` and print them as a table."""
    from dposer_ros.backends.bench import machine_description

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine_description(), "platform": platform.platform(), "backend": backend,
                               "date": datetime.date.today().isoformat(), "command": command, "rows": rows}, indent=1))
    print("| " + " | ".join(rows[0]) + " |")
    print("|---" * len(rows[0]) + "|")
    for r in rows:
        print("| " + " | ".join(str(v) for v in r.values()) + " |")
