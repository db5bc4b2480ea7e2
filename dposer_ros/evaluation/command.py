"""`dposer eval`: load the prior, the clips and the corruptions, run the methods, write the report."""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from ..prior.model import PosePrior
    from ..sensors import load_corruptions
    from .methods import METHODS, MethodError, build_methods
    from .report import markdown_table, write_report
    from .runner import evaluate

    torch.set_num_threads(args.threads)
    if args.int8 and args.backend != "onnxruntime":
        raise ValueError("--int8 needs --backend onnxruntime (int8 weights are ONNX Runtime's)")
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:  # before anything slow
        raise MethodError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; available methods: {', '.join(METHODS)}")
    corruptions = load_corruptions(args.corruption_file or _default_corruptions(args))
    if args.corruptions:
        wanted = [c.strip() for c in args.corruptions.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in corruptions]
        if unknown:
            raise ValueError(f"unknown corruption(s) {', '.join(unknown)}; defined: {', '.join(corruptions)}")
        corruptions = {c: corruptions[c] for c in wanted}
    prior = PosePrior.load(args.prior)
    engine = None
    if args.backend is not None:  # the refiners' network on an inference backend, as the node runs it
        from ..backends import select_engine

        engine = select_engine(args.prior, args.backend, device="cpu" if args.int8 else "auto", threads=args.threads,
                               int8=args.int8)
    overrides = _overrides(args.set)
    factories, errors = build_methods(names, prior, {"baselines_dir": args.baselines_dir, "settings": overrides,
                                                    "motion": args.motion, "engine": engine,
                                                    "compiled_step": args.compiled_step,
                                                    "frame_graph": args.frame_graph})
    if not factories:
        raise MethodError("no method could be built: " + "; ".join(f"{n}: {m}" for n, m in errors.items()))
    for name, message in errors.items():
        print(f"dposer eval: method {name!r} could not be built ({message}); going on without it", file=sys.stderr)
        factories[name] = _failed(message)  # reported as FAILED rows
    clips = _clips(args, corruptions)
    if args.keypoints is not None:  # the user's keypoints come in one format: every sensor model reads them in it
        corruptions = {n: dataclasses.replace(c, format_name=args.format) for n, c in corruptions.items()
                       if c.clips == "body"}
    start = time.time()
    result = evaluate(factories, corruptions, clips, seed=args.seed, progress=not args.quiet)
    extra = {
        "command": " ".join(["dposer", *sys.argv[1:]]),  # as `dposer`, however it was started
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "prior": {"path": str(args.prior), "sha256": prior.meta.get("sha256"), "steps": prior.meta.get("steps")},
        "engine": "checkpoint (torch)" if engine is None else getattr(engine, "name", type(engine).__name__),
        "solver_step": "compiled ahead of time" if args.compiled_step else "eager",
        "frame_graph": args.frame_graph,  # few_step's warm frames as one ONNX graph (ONNX Runtime)
        "methods_failed_to_build": errors,
        "settings": overrides,  # --set: refiner settings instead of config/solvers/refine.yaml's
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "processor": platform.processor(),
        "seconds": round(time.time() - start, 1),
    }
    paths = write_report(result, args.out, extra)
    print(markdown_table(result))
    for what, path in paths.items():
        print(f"{what}: {path}")
    failed = errors or any(r.error for r in result.rows)
    return 1 if failed else 0


def _overrides(pairs: list[str]) -> dict:
    """`--set KEY=VALUE` pairs -> RefineSettings overrides (values read as YAML), checked against the fields."""
    import yaml

    from ..solvers.refine import RefineSettings

    fields = {f.name for f in dataclasses.fields(RefineSettings)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE with KEY a refiner setting ({', '.join(sorted(fields))})")
        out[key] = yaml.safe_load(value)
    return out


def _default_corruptions(args: argparse.Namespace) -> Path:
    from ..paths import config_path

    foreign = args.protocol == "foreign" and args.keypoints is None
    return config_path("eval/corruptions_foreign.yaml" if foreign else "eval/corruptions.yaml")


def _clips(args: argparse.Namespace, corruptions: dict) -> list:
    """The clips of the chosen protocol (see the README of this package)."""
    from .foreign import foreign_clips, load_keypoint_clips

    kinds = {c.clips for c in corruptions.values()}
    if args.keypoints is not None:
        from ..keypoints import get_format

        if not args.format:
            raise ValueError("--keypoints needs --format: the keypoint format of the arrays (e.g. h36m17, coco17)")
        return load_keypoint_clips(args.keypoints, get_format(args.format), args.frames)
    if args.protocol == "foreign":
        from ..paths import default_mocap_dir

        foreign: list = []
        for kind, count in (("body", args.clips), ("hands", args.hand_clips)):
            if kind in kinds:
                formats = tuple(sorted({c.format_name for c in corruptions.values() if c.clips == kind}))
                foreign += foreign_clips(args.mocap_dir or default_mocap_dir(), count, args.frames, args.split, args.seed,
                                       formats, progress=not args.quiet, kind=kind,
                                       takes=tuple(args.takes) if kind == "body" else ())
        return foreign
    from ..dataset.poses import default_dataset_path, load_dataset
    from .clips import select_clips

    data = load_dataset(args.dataset or default_dataset_path())
    clips = []
    if "body" in kinds:
        clips += select_clips(data, args.clips, args.frames, "body", args.seed, args.split, takes=tuple(args.takes))
    if "hands" in kinds:
        clips += select_clips(data, args.hand_clips, args.frames, "hands", args.seed, args.split)
    return clips


def _failed(message: str):
    def factory(fmt):
        raise RuntimeError(message)
    return factory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..dataset.poses import default_dataset_path
    from .methods import available_methods

    parser.add_argument("--prior", type=Path, required=True, help="prior checkpoint (prior.pt)")
    parser.add_argument("--protocol", choices=("foreign", "inhouse"), default="foreign",
                        help="foreign (default): truth = the held-out takes' own source skeleton joints, read as "
                             "keypoints by name; inhouse: truth = this project's SMPL-X retargeting (needs the dataset)")
    parser.add_argument("--split", choices=("val", "test"), default="test",
                        help="takes to draw clips from: val for tuning, test for the held-out comparison")
    parser.add_argument("--mocap-dir", type=Path, default=None, help="shared/data/mocap (foreign protocol)")
    parser.add_argument("--keypoints", type=Path, default=None,
                        help="your own keypoints: an npz with keypoints (N, K, 3) metres, clip (N,) ids and optional "
                             "confidence (N, K) (0 = not defined) and up (3,) (the frame's up direction, for the prior); "
                             "scored on those, with the body corruptions")
    parser.add_argument("--format", default="", help="keypoint format of --keypoints (e.g. h36m17, coco17)")
    parser.add_argument("--methods", default="few_step", help=f"comma-separated, from: {', '.join(available_methods())}")
    parser.add_argument("--clips", type=int, default=12, help="body clips (test split, different takes and sources)")
    parser.add_argument("--hand-clips", type=int, default=4, help="hand clips (windows of the split's two-hand takes)")
    parser.add_argument("--takes", type=lambda v: [t for t in v.split(",") if t], default=[],
                        help="body clips only from takes whose name holds one of these comma-separated strings "
                             "(e.g. lieDown,depositFloor,squat)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a refiner setting for every refining method instead of config/solvers/refine.yaml's "
                             "(repeatable; e.g. --set pelvis_tilt_weight=300)")
    parser.add_argument("--frames", type=int, default=60, help="frames per clip (30 Hz)")
    parser.add_argument("--corruptions", default=None, help="comma-separated names (default: all in the corruption file)")
    parser.add_argument("--corruption-file", type=Path, default=None,
                        help="corruption models (default: config/eval/corruptions_foreign.yaml for the foreign protocol, "
                             "else config/eval/corruptions.yaml)")
    parser.add_argument("--dataset", type=Path, default=None, help=f"dataset file (default: {default_dataset_path()})")
    parser.add_argument("--baselines-dir", type=Path, default=None,
                        help="fitted GMM / VAE baseline priors (default: models/dposer_cpu/baselines, see `dposer baselines`)")
    parser.add_argument("--motion", type=Path, default=None,
                        help="motion model of hidden legs for few_step (default: models/dposer_cpu/motion.pt, see "
                             "`dposer motion`; `--set motion_legs=false`: without it)")
    parser.add_argument("--seed", type=int, default=0, help="seed of clip selection and corruptions")
    from ..backends.select import BACKENDS

    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="run the refiners' network on this inference backend, as the node does (default: the "
                             "checkpoint's torch module; the full optimisation always uses it: it needs gradients)")
    parser.add_argument("--int8", action="store_true", help="with --backend onnxruntime: int8 weights (the node's `int8`)")
    parser.add_argument("--compiled-step", action="store_true",
                        help="the refiners' Gauss-Newton step compiled ahead of time (the node's `compiled_step`; "
                             "compiled on first use, `dposer compile`)")
    parser.add_argument("--frame-graph", action="store_true",
                        help="few_step's warm frames as one ONNX graph (the prior's steps with the score network "
                             "inside; exported on first use into models/engines) run by ONNX Runtime on the CPU")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (latency is measured with these)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.md, results.json and the plot")
