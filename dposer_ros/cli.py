"""The `dposer` command line: `dposer data build`, `dposer demo`, ..."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .dataset.poses import default_dataset_path
from .paths import config_path, default_mocap_dir


def _data_build(args: argparse.Namespace) -> int:
    from .dataset.build import BuildConfig, build_dataset
    from .dataset.figure import retarget_figure

    config = BuildConfig.from_yaml(args.config)
    reports, results = build_dataset(args.mocap_dir, config, args.out, args.max_takes)
    figure = retarget_figure(results, args.figure or args.out.with_suffix(".png"), config.fps)
    print(f"{'source':16s} {'takes':>6s} {'frames':>8s} {'kept':>8s} {'fit mean/p95 mm':>16s} {'raw mean/p95 mm':>16s}")
    for r in reports:
        print(f"{r.source:16s} {r.takes:6d} {r.frames:8d} {r.frames_kept:8d} "
              f"{r.fit_error_mm['mean']:7.1f}/{r.fit_error_mm['p95']:<8.1f} {r.raw_error_mm['mean']:7.1f}/{r.raw_error_mm['p95']:<8.1f}")
    print(f"dataset: {args.out}\nfigure: {figure}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .prior.train import TrainConfig, train

    cfg = TrainConfig.from_yaml(args.config)
    if args.dataset:
        cfg.dataset = str(args.dataset)
    if args.out:
        cfg.out = str(args.out)
    if args.steps:
        cfg.steps = args.steps
    final = train(cfg, resume=not args.restart)
    print(f"prior: {final}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .dataset.build import BuildConfig, build_dataset
    from .dataset.figure import retarget_figure

    config = BuildConfig.from_yaml(config_path("data/build.yaml"))
    args.out.mkdir(parents=True, exist_ok=True)
    reports, results = build_dataset(args.mocap_dir, config, args.out / "demo_dataset.npz", max_takes=3)
    for r in reports:
        print(f"{r.source:16s} {r.frames:6d} frames retargeted, fit error mean {r.fit_error_mm['mean']:.1f} mm")
    print(f"picture: {retarget_figure(results, args.out / 'demo_retarget.png', config.fps)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dposer", description="DPoser-X style SMPL-X pose prior: data, training, solvers.")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="the training data").add_subparsers(dest="data_command", required=True)
    build = data.add_parser("build", help="retarget shared/data/mocap onto SMPL-X and write the dataset")
    build.add_argument("--mocap-dir", type=Path, default=default_mocap_dir(), help="folder with the mocap sources")
    build.add_argument("--config", type=Path, default=None, help="build settings (default: config/data/build.yaml)")
    build.add_argument("--out", type=Path, default=default_dataset_path(), help="dataset file (.npz), outside git")
    build.add_argument("--figure", type=Path, default=None, help="picture of retargeted frames (default: beside --out)")
    build.add_argument("--max-takes", type=int, default=None, help="at most this many takes per source (quick checks)")
    build.set_defaults(func=_data_build)

    tr = commands.add_parser("train", help="train the diffusion prior (resumes an interrupted run)")
    tr.add_argument("--config", type=Path, required=True, help="training settings, e.g. config/train/cpu.yaml")
    tr.add_argument("--dataset", type=Path, default=None, help="dataset file (default: the one `data build` wrote)")
    tr.add_argument("--out", type=Path, default=None, help="run folder (overrides the config's `out`)")
    tr.add_argument("--steps", type=int, default=None, help="total steps (overrides the config)")
    tr.add_argument("--restart", action="store_true", help="ignore a saved training state and start over")
    tr.set_defaults(func=_train)

    demo = commands.add_parser("demo", help="the end-to-end demo: retarget held-out takes and draw them")
    demo.add_argument("--mocap-dir", type=Path, default=default_mocap_dir(), help="folder with the mocap sources")
    demo.add_argument("--out", type=Path, default=Path("out"), help="folder for the demo's outputs")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "config", "unset") is None:
        args.config = config_path("data/build.yaml")
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"dposer: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
