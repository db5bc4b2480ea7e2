"""Choose each prior's strength on the in-house validation split, by the same grid for every method.

    python bench/tune_priors.py bench/experiments/<date>-<name>/config.yaml --jobs 2

Every setting of every method's grid streams the same validation clips through the same corruptions; the score is
the mean over corruptions of the setting's primary error divided by the reference method's. The table goes beside
the config (results.md and .json), once: an experiment with results is never run again (make a new folder). A config
must pin its dataset file (`dataset`; `dataset_version` names its build) and its prior (`prior`, `prior_sha256`): the rounds of
2026-11-21 (bench/experiments/2026-11-21-inhouse-*) pinned neither and are kept as records, not re-run. The chosen
settings are copied into config/solvers/methods.yaml by hand. For the foreign-skeleton protocol, the primary one since
2026-11-29, use bench/foreign_tuning.py.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]


def _run(job: tuple[str, dict, dict]) -> tuple[str, dict, dict[str, float]]:
    """One (method, settings): primary error per corruption on the validation clips (one torch thread)."""
    method, settings, cfg = job
    import torch

    torch.set_num_threads(1)
    from dposer_ros.dataset.poses import default_dataset_path, load_dataset
    from dposer_ros.evaluation import evaluate, load_corruptions, select_clips
    from dposer_ros.evaluation.compare import primary_metric
    from dposer_ros.evaluation.methods import build_methods
    from dposer_ros.prior.model import PosePrior

    prior = PosePrior.load(ROOT / cfg.get("prior", "models/dposer_cpu/prior.pt"))  # a candidate model: `prior:`
    data = load_dataset(Path(cfg["dataset"]).expanduser() if "dataset" in cfg else default_dataset_path())  # `dataset:`
    clips = (select_clips(data, cfg["clips"], cfg["frames"], "body", cfg["seed"], cfg["split"], tuple(cfg.get("takes", ())))
             + select_clips(data, cfg["hand_clips"], cfg["frames"], "hands", cfg["seed"], cfg["split"]))
    for extra in cfg.get("extra_clips", ()):  # more body clips from named takes (e.g. the floor poses of round 6)
        clips += select_clips(data, extra["clips"], cfg["frames"], "body", cfg["seed"], cfg["split"], tuple(extra["takes"]))
    del data
    corruptions = load_corruptions()
    corruptions = {c: corruptions[c] for c in cfg["corruptions"]}
    options = {"settings": settings, "baselines_dir": ROOT / cfg["baselines_dir"] if "baselines_dir" in cfg else None}
    factories, errors = build_methods([method], prior, options)
    if errors:
        raise RuntimeError(errors[method])
    result = evaluate(factories, corruptions, clips, seed=cfg["seed"], progress=False)
    return method, settings, {r.corruption: r.metrics[primary_metric(corruptions[r.corruption].to_dict())]
                              for r in result.rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="bench/experiments/<date>-<name>/config.yaml")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    args = parser.parse_args()
    cfg = yaml.safe_load(args.config.read_text())
    missing = [k for k in ("dataset", "dataset_version", "prior", "prior_sha256") if k not in cfg]
    if missing:
        raise SystemExit(f"{args.config}: pins no {', '.join(missing)}; an experiment must say what it ran on")
    digest = hashlib.sha256((ROOT / cfg["prior"]).read_bytes()).hexdigest()
    if digest != cfg["prior_sha256"]:
        raise SystemExit(f"{args.config}: {cfg['prior']} has sha256 {digest}, the experiment pins {cfg['prior_sha256']}")
    args.out = args.config.resolve().parent / "results"
    if args.out.with_suffix(".json").exists():
        raise SystemExit(f"{args.out}.json exists: an experiment is recorded once; make a new folder")
    ref = cfg["reference"]
    jobs = [(ref["method"], ref["settings"], cfg)]
    for method, grid in cfg["grids"].items():
        for values in itertools.product(*grid.values()):
            settings = dict(zip(grid, values))
            if (method, settings) != (ref["method"], ref["settings"]):
                jobs.append((method, settings, cfg))
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(tqdm(pool.map(_run, jobs), total=len(jobs), desc="settings"))
    reference = results[0][2]
    rows = []
    for method, settings, errors in results:
        score = sum(errors[c] / reference[c] for c in cfg["corruptions"]) / len(cfg["corruptions"])
        rows.append({"method": method, "settings": settings, "score": score, "errors": errors})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"config": cfg, "rows": rows}, indent=1))
    print(write_report(cfg, rows, args.config, args.out))


def write_report(cfg: dict, rows: list[dict], config: Path, out: Path) -> str:
    """The markdown table of a tuning run (each method's best setting in bold) -> out.md; returns it."""
    best = {}
    for r in rows:
        if r["method"] not in best or r["score"] < best[r["method"]]["score"]:
            best[r["method"]] = r
    ref = cfg["reference"]
    head = "| method | settings | score | " + " | ".join(cfg["corruptions"]) + " |"
    lines = [f"# Prior strength chosen on the {cfg['split']} split", "",
             f"Command: `python bench/tune_priors.py --config {Path(config).resolve().relative_to(ROOT)}`: "
             f"{cfg['clips']} body and {cfg['hand_clips']} hand clips of {cfg['frames']} frames"
             + "".join(f", {e['clips']} body clips from takes {', '.join(e['takes'])}" for e in cfg.get("extra_clips", ()))
             + ". Score: mean over "
             f"corruptions of the error divided by {ref['method']}'s (lower is better); errors in mm (occluded joints "
             "for occlusions, hand MPJPE for hand corruptions, all joints otherwise). **Bold**: each method's best, "
             "the setting used.", "", head, "|" + "---|" * (3 + len(cfg["corruptions"]))]
    for r in sorted(rows, key=lambda r: (r["method"], r["score"])):
        mark = "**" if best[r["method"]] is r else ""
        cells = " | ".join(f"{r['errors'][c]:.1f}" for c in cfg["corruptions"])
        lines.append(f"| {r['method']} | {mark}{json.dumps(r['settings'])}{mark} | {mark}{r['score']:.3f}{mark} | {cells} |")
    text = "\n".join(lines) + "\n"
    Path(out).with_suffix(".md").write_text(text)
    return text

if __name__ == "__main__":
    main()
