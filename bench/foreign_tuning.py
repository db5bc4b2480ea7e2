"""Tune solver settings on the foreign-skeleton protocol's VALIDATION takes: one experiment folder per run.

    python bench/foreign_tuning.py bench/experiments/2026-11-29-foreign-calibration/config.yaml --jobs 2

The config pins what it was run with (`prior` and its `prior_sha256`; `motion` and its `motion_sha256` for the
motion model of hidden legs that `few_step` uses, else the shipped one; the split is `val`, never `test`), names the
foreign corruptions (config/eval/corruptions_foreign.yaml), the clips (`clips` body clips; `hand_clips` windows of
the two-hand takes for the hand corruptions, default 4; `takes`: body clips only from takes whose id holds one of
these strings), and the variants: name -> {method, settings} (a method of `dposer eval` and RefineSettings
overrides; optional `engine`: {backend, int8} of `select_engine` for the prior's network, default the torch
checkpoint itself; optional `compiled_step`: true for the solver's step compiled ahead of time; optional
`frame_graph`: true for few_step's warm frames as one ONNX graph). Every variant streams the same clips. Written
beside the config: results.json (every metric of every variant and corruption) and results.md (primary error per
corruption: hidden keypoints under occlusion, all keypoints otherwise; score = mean of the ratios to the first
variant). An experiment that already has results is never overwritten: make a new folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ("prior", "prior_sha256", "split", "clips", "frames", "seed", "corruptions", "variants")


def _run(job: tuple[str, dict, dict]) -> tuple[str, dict]:
    name, variant, cfg = job
    import torch

    torch.set_num_threads(1)
    from dposer_ros.evaluation import evaluate, load_corruptions
    from dposer_ros.evaluation.foreign import foreign_clips
    from dposer_ros.evaluation.methods import build_methods
    from dposer_ros.paths import config_path, default_mocap_dir
    from dposer_ros.prior.model import PosePrior

    prior = PosePrior.load(ROOT / cfg["prior"])
    if "engine" in variant:  # the network on an inference backend instead of the checkpoint's torch module
        from dposer_ros.backends import select_engine

        prior = select_engine(ROOT / cfg["prior"], threads=1, **variant["engine"])
    corruptions = load_corruptions(config_path("eval/corruptions_foreign.yaml"))
    corruptions = {c: corruptions[c] for c in cfg["corruptions"]}
    formats = tuple(sorted({c.format_name for c in corruptions.values()}))
    kinds = {c.clips for c in corruptions.values()}
    clips = [] if "body" not in kinds else foreign_clips(default_mocap_dir(), cfg["clips"], cfg["frames"], cfg["split"],
                                                         cfg["seed"], formats, takes=tuple(cfg.get("takes", ())))
    if "hands" in kinds:  # windows of the split's two-hand takes (`hand_clips`, default 4)
        clips += foreign_clips(default_mocap_dir(), cfg.get("hand_clips", 4), cfg["frames"], cfg["split"], cfg["seed"],
                               formats, kind="hands")
    options = {"settings": variant.get("settings", {}), "motion": ROOT / cfg["motion"] if "motion" in cfg else None,
               "compiled_step": variant.get("compiled_step", False), "frame_graph": variant.get("frame_graph", False)}
    factories, errors = build_methods([variant["method"]], prior, options)
    if errors:
        raise RuntimeError(f"{name}: {errors}")
    result = evaluate({name: factories[variant["method"]]}, corruptions, clips, seed=cfg["seed"], progress=False)
    return name, {r.corruption: r.metrics for r in result.rows}


def check_config(cfg: dict, path: Path) -> None:
    """Refuse what would not reproduce: missing pins, a prior that is not the pinned file, the test split."""
    missing = [k for k in REQUIRED if k not in cfg]
    if missing:
        raise SystemExit(f"{path}: missing {', '.join(missing)} (an experiment pins its prior, split and clips)")
    if cfg["split"] != "val":
        raise SystemExit(f"{path}: split is {cfg['split']!r}; settings are tuned on 'val' only (test is held out)")
    digest = hashlib.sha256((ROOT / cfg["prior"]).read_bytes()).hexdigest()
    if digest != cfg["prior_sha256"]:
        raise SystemExit(f"{path}: {cfg['prior']} has sha256 {digest}, the experiment pins {cfg['prior_sha256']}")
    if "motion" in cfg:
        digest = hashlib.sha256((ROOT / cfg["motion"]).read_bytes()).hexdigest()
        if digest != cfg.get("motion_sha256"):
            raise SystemExit(f"{path}: {cfg['motion']} has sha256 {digest}, the experiment pins {cfg.get('motion_sha256')}")


def table(cfg: dict, results: dict[str, dict]) -> str:
    from dposer_ros.evaluation import load_corruptions
    from dposer_ros.evaluation.compare import primary_metric
    from dposer_ros.paths import config_path

    corruptions = load_corruptions(config_path("eval/corruptions_foreign.yaml"))
    names = list(cfg["variants"])
    primary = {c: primary_metric(corruptions[c].to_dict(), keypoint_truth=True) for c in cfg["corruptions"]}
    ref = names[0]
    lines = [f"| variant | {' | '.join(cfg['corruptions'])} | score |", "|---" * (len(cfg["corruptions"]) + 2) + "|"]
    for name in names:
        cells = [results[name][c][primary[c]] for c in cfg["corruptions"]]
        ratios = [v / results[ref][c][primary[c]] for v, c in zip(cells, cfg["corruptions"])]
        lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in cells) + f" | {sum(ratios) / len(ratios):.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="bench/experiments/<date>-<name>/config.yaml")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    parser.add_argument("--table", action="store_true", help="only (re)write results.md from the recorded results")
    args = parser.parse_args()
    config = args.config.resolve()
    cfg = yaml.safe_load(config.read_text())
    out = config.parent
    if args.table:
        results = json.loads((out / "results.json").read_text())["results"]
    else:
        check_config(cfg, config)
        if (out / "results.json").exists():
            print(f"{out}/results.json exists: an experiment is recorded once; make a new folder", file=sys.stderr)
            return 2
        jobs = [(name, variant, cfg) for name, variant in cfg["variants"].items()]
        with ProcessPoolExecutor(args.jobs) as pool:
            results = dict(pool.map(_run, jobs))
        (out / "results.json").write_text(json.dumps({"config": cfg, "results": results}, indent=1))
    text = (f"# {out.name}\n\nCommand: `python bench/foreign_tuning.py {config.relative_to(ROOT)}`\n\n"
            f"Primary error (mm): hidden keypoints under occlusion, all keypoints otherwise; score: mean ratio to "
            f"`{next(iter(cfg['variants']))}` (lower is better). {cfg['clips']} validation clips"
            f"{' and ' + str(cfg.get('hand_clips', 4)) + ' two-hand windows' if cfg.get('hand_clips') else ''} x "
            f"{cfg['frames']} frames, seed {cfg['seed']}.\n\n{table(cfg, results)}\n")
    (out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
