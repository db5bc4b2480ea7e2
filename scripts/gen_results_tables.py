#!/usr/bin/env python3
"""Regenerate the result tables quoted in README.md, bench/RESULTS.md and the model card from the run that made them.

    python scripts/gen_results_tables.py           # rewrite every table between its markers
    python scripts/gen_results_tables.py --check   # exit 1 when a quoted table differs from its results file

A table sits between `<!-- results:<name>:begin -->` and `<!-- results:<name>:end -->`; <name> is a folder under
bench/eval/ holding the `dposer eval` run's results.json, or several joined by '+' (runs made apart, merged as
`dposer compare` merges them; the first run's first method is the reference). The table: each corruption's primary error (hidden keypoints
under occlusion, all keypoints otherwise) per method, and the first method's ratio to each other one with its 95 %
bootstrap interval over clips (`dposer compare`), then the run's command, clips and date. A <name> ending in .json
is a `bench/soak.py`, `bench/shutdown.py` or `bench/solver_split.py` run in bench/eval/.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = (ROOT / "README.md", ROOT / "bench" / "RESULTS.md", ROOT / "models" / "dposer_cpu" / "MODEL_CARD.md")
BLOCK = re.compile(r"(<!-- results:([\w.+-]+):begin -->\n)(.*?)(<!-- results:\2:end -->)", re.S)


def render(name: str) -> str:
    sys.path.insert(0, str(ROOT))
    if name.endswith(".json"):  # a bench/soak.py or bench/shutdown.py run
        sys.path.insert(0, str(ROOT / "bench"))
        import shutdown
        import soak

        run = json.loads((ROOT / "bench" / "eval" / name).read_text())
        if "rows" in run:  # a benchmark's rows as they are (bench/solver_split.py)
            head = list(run["rows"][0])
            lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
            lines += ["| " + " | ".join(str(row[h]) for h in head) + " |" for row in run["rows"]]
            lines += ["", f"{run['backend']}; run {run['date']} (`{run['command']}`; bench/eval/{name})."]
            return "\n".join(lines) + "\n"
        return (shutdown if "trials" in run else soak).table(run)
    from dposer_ros.evaluation.compare import keypoint_truth, merge, paired, primary_metric

    runs = [json.loads((ROOT / "bench" / "eval" / part / "results.json").read_text()) for part in name.split("+")]
    dates = " and ".join(dict.fromkeys(str(r.get("date")) for r in runs))  # each run's, once
    result = runs[0] if len(runs) == 1 else {**merge(runs), "clips": runs[0]["clips"], "date": dates,
                                             "command": " and ".join(r.get("command", "") for r in runs)}
    methods = result["methods"]
    ref = methods[0]
    rows = {r["corruption"]: {} for r in result["results"]}
    for r in result["results"]:
        rows[r["corruption"]][r["method"]] = r
    pairs = {(p["corruption"], p["method"]): p for p in (result.get("paired") or {}).get("rows", []) or paired(result, ref)}
    head = (["corruption", "error"] + methods + [f"{ref} / {m} [95 % CI]" for m in methods[1:]])
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for cor in result["corruptions"]:
        metric = primary_metric(cor, keypoint_truth(result))
        cells = [cor["name"], "hidden" if metric == "mpjpe_occluded" else "all"]
        cells += [f"{rows[cor['name']][m]['metrics'][metric]:.1f}" for m in methods]
        for m in methods[1:]:
            p = pairs.get((cor["name"], m))
            cells.append("–" if p is None else f"{p['ratio']:.2f} [{p['ratio_ci95'][0]:.2f}, {p['ratio_ci95'][1]:.2f}]")
        lines.append("| " + " | ".join(cells) + " |")
    when = result.get("date", "on an unrecorded date")
    command = " and ".join(c.split("/bin/")[-1] for c in result.get("command", "").split(" and "))
    files = ", ".join(f"bench/eval/{part}/results.json" for part in name.split("+"))
    lines += ["", f"mm; {len(result['clips'])} clips; run {when} (`{command}`; {files})."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for path in FILES:
        text = path.read_text()
        new = BLOCK.sub(lambda m: m.group(1) + render(m.group(2)) + m.group(4), text)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    for path in stale:
        print(f"{path.relative_to(ROOT)}: {'out of date' if args.check else 'tables rewritten'}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
