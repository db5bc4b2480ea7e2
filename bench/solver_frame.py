"""A warm refinement frame, this checkout against another revision's code, interleaved run by run.

    python bench/solver_frame.py --against v0.5.0 --cases coco_wholebody133:10:1,coco17:10:1,coco17:1:4 --rounds 4

Each round times, in a fresh process per revision and one after the other (so that load changes hit both alike),
the median of 30 warm frames of `FewStepRefiner` (ONNX Runtime engine, one thread) on a synthetic batch with a
hidden leg (`stream`): a case is format:people:steps. The other revision is checked out into a
temporary git worktree and imported from there with this checkout's prior file. Writes bench/eval/solver_frame.json
(per case: the median over rounds of each side's median, and their ratio) and prints it as a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 30


def time_frame(fmt_name: str, people: int, steps: int, prior: str) -> float:
    """Median milliseconds of a warm frame (run inside the revision's process)."""
    import torch

    torch.set_num_threads(1)
    from dposer_ros.backends.select import select_engine
    from dposer_ros.keypoints import get_format
    from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings

    fmt = get_format(fmt_name)
    refiner = FewStepRefiner(select_engine(Path(prior), "onnxruntime", threads=1), fmt, RefineSettings(steps=steps))
    obs = stream(fmt, people)
    state = refiner(obs, None)
    for _ in range(5):
        refiner(obs, state)
    times = []
    for _ in range(FRAMES):
        start = time.perf_counter()
        refiner(obs, state)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def stream(fmt, people: int):
    """Random bodies' keypoints (1 cm noise) with the left knee, ankle and foot hidden, so that the prior is asked at
    every step (a fully seen frame does not ask it since version 0.5.1); built here, the same for both revisions."""
    import torch

    from dposer_ros.body.kinematics import ForwardKinematics
    from dposer_ros.solvers.types import Observation

    gen = torch.Generator().manual_seed(0)
    pose = 0.2 * torch.randn(people, 55, 3, generator=gen)
    pose[:, 0] = torch.tensor([1.2, 0.0, 0.0]) + 0.3 * torch.randn(people, 3, generator=gen)
    transl = torch.randn(people, 3, generator=gen) + torch.tensor([0.0, 0.0, 3.0])
    points = fmt.from_posed(ForwardKinematics()(pose, transl)).float()
    points = points + 0.01 * torch.randn(points.shape, generator=gen)
    conf = torch.ones(points.shape[:2])
    conf[:, torch.isin(torch.tensor([int(j) for j in fmt.joints]), torch.tensor([4, 7, 10]))] = 0.0  # left leg
    return Observation(points, conf, fmt)


def run_in(tree: Path, case: str, prior: Path) -> float:
    fmt, people, steps = case.split(":")
    code = (f"import sys; sys.path.insert(0, {str(tree)!r}); sys.path.insert(1, {str(ROOT / 'bench')!r}); "
            f"from solver_frame import time_frame; print(time_frame({fmt!r}, {int(people)}, {int(steps)}, {str(prior)!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision to compare with (a tag, a commit)")
    parser.add_argument("--cases", default="coco_wholebody133:10:1,coco17:10:1,coco17:1:4", help="format:people:steps,...")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--prior", type=Path, default=ROOT / "models" / "dposer_cpu" / "prior.pt")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "eval" / "solver_frame.json")
    args = parser.parse_args()
    cases = args.cases.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "other"
        try:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(other), args.against],
                           check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as err:
            print(f"cannot check out {args.against!r}: {err.stderr.strip()}", file=sys.stderr)
            return 2
        try:
            times: dict[str, dict[str, list[float]]] = {c: {"this": [], "other": []} for c in cases}
            for r in range(args.rounds):
                for case in cases:
                    times[case]["this"].append(run_in(ROOT, case, args.prior))
                    times[case]["other"].append(run_in(other, case, args.prior))
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=False)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = []
    for case in cases:
        this, that = statistics.median(times[case]["this"]), statistics.median(times[case]["other"])
        fmt, people, steps = case.split(":")
        rows.append({"format": fmt, "people": int(people), "prior steps": int(steps), f"{head} (ms)": f"{this:.1f}",
                     f"{args.against} (ms)": f"{that:.1f}", "speed-up": f"{that / this:.2f}x"})
    command = "python bench/solver_frame.py " + " ".join(sys.argv[1:])
    run = {"command": command, "date": time.strftime("%Y-%m-%d"), "backend": f"warm frames, ONNX Runtime engine, one "
           f"thread, {platform.platform()}, median of {args.rounds} interleaved rounds", "rows": rows, "times": times}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(run, indent=1) + "\n")
    lines = ["| " + " | ".join(rows[0]) + " |", "|---" * len(rows[0]) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
