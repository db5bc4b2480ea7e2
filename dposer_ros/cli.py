"""The `dposer` command line: `dposer data build`, `dposer demo`, ..."""

from __future__ import annotations

import argparse
import sys
import time
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


def _sample(args: argparse.Namespace) -> int:
    import json

    import torch

    from .body.render import pose_grid
    from .dataset.poses import load_dataset
    from .prior.model import PosePrior
    from .solvers.generate import average_pairwise_distance, nearest_neighbour_mpjpe, sample

    torch.set_num_threads(args.threads)
    prior = PosePrior.load(args.prior)
    gen = torch.Generator().manual_seed(args.seed)
    poses = sample(prior, args.num, steps=args.steps, generator=gen)
    args.out.mkdir(parents=True, exist_ok=True)
    pose_grid(poses[: args.show].numpy(), args.out / "samples.png")
    data = load_dataset(args.dataset)
    test = data.subset(data.split_mask("test") & data.part_mask[:, 0])
    rng = torch.Generator().manual_seed(args.seed)
    held_out = torch.from_numpy(test.pose)[torch.randperm(len(test), generator=rng)[: args.reference]]
    real = torch.from_numpy(data.subset(data.split_mask("val") & data.part_mask[:, 0]).pose)
    real = real[torch.randperm(len(real), generator=rng)[: args.num]]
    stats = {
        "samples": args.num,
        "sampler_steps": args.steps,
        "apd_m": average_pairwise_distance(poses),
        "nn_mpjpe_mm": float(nearest_neighbour_mpjpe(poses, held_out).mean() * 1000),
        "reference_apd_m_val_poses": average_pairwise_distance(real),
        "reference_nn_mpjpe_mm_val_poses": float(nearest_neighbour_mpjpe(real, held_out).mean() * 1000),
        "held_out_test_poses": len(held_out),
    }
    (args.out / "samples.json").write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats, indent=2))
    print(f"picture: {args.out / 'samples.png'}")
    return 0


def _baselines(args: argparse.Namespace) -> int:
    import torch

    from .dataset.poses import load_dataset
    from .prior.classical import GMMPrior, VAEPrior

    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset)
    train_data = data.subset(data.split_mask("train"))
    args.out.mkdir(parents=True, exist_ok=True)
    GMMPrior.fit(train_data, components=args.components).save(args.out / "gmm.npz")
    VAEPrior.fit(train_data, steps=args.vae_steps).save(args.out / "vae.pt")
    print(f"baseline priors: {args.out / 'gmm.npz'}, {args.out / 'vae.pt'}")
    return 0


def _completion(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .dataset.poses import load_dataset
    from .prior.completion import train_completion

    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset)
    train_data = data.subset(data.split_mask("train") & data.part_mask[:, 0].astype(bool))
    model = train_completion(torch.from_numpy(np.asarray(train_data.pose)), steps=args.steps, seed=args.seed)
    model.meta.update(dataset=str(args.dataset), command="dposer completion " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in (("steps", args.steps), ("seed", args.seed))))
    model.save(args.out)
    print(f"completion model: {args.out} (final training loss {model.meta['final_loss']})")
    return 0


def _motion(args: argparse.Namespace) -> int:
    import torch

    from .dataset.poses import load_dataset
    from .prior.motion import MotionTrainConfig, train_motion

    config = MotionTrainConfig.from_yaml(args.config)
    torch.set_num_threads(config.threads)
    model = train_motion(load_dataset(args.dataset), config)
    model.meta.update(dataset=str(args.dataset), command=f"dposer motion --config {args.config}")
    model.save(args.out)
    print(f"motion model: {args.out} (final training loss {model.meta['final_loss']})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .ros.commands import run_demo

    return run_demo(args)


def _replay(args: argparse.Namespace) -> int:
    from .ros.commands import run_replay

    return run_replay(args)


def _record(args: argparse.Namespace) -> int:
    from .ros.commands import run_record

    return run_record(args)


def _export_poses(args: argparse.Namespace) -> int:
    from .replay.export_poses import export_poses

    try:
        paths = export_poses(args.bag, args.out, args.topic)
    except (ValueError, FileNotFoundError) as err:
        print(f"dposer export-poses: {err}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluation.command import run_eval

    return run_eval(args)


def _export(args: argparse.Namespace) -> int:
    from .backends import BackendError, export_onnx

    try:
        result = export_onnx(args.prior, args.out, opset=args.opset, check=not args.no_check, tolerance=args.tolerance)
    except BackendError as err:
        print(f"dposer: error: {err}", file=sys.stderr)
        return 1
    if result.max_abs_diff is not None:
        print(f"max |eps_torch - eps_onnxruntime| = {result.max_abs_diff:.3g} (batches 1, 7, 64; tolerance {args.tolerance:g})")
    print(f"onnx: {result.path} (opset {result.opset}, sha256 {result.sha256[:16]}..., prior sha256 "
          f"{result.meta.prior_sha256[:16]}...)")
    if args.tensorrt:
        from .backends import TensorRTEngine

        try:
            engine = TensorRTEngine(result.path, cache_dir=args.engine_dir, rebuild=args.rebuild)
        except BackendError as err:
            print(f"dposer: error: no TensorRT engine: {err}", file=sys.stderr)
            return 1
        print(f"tensorrt engine: {engine.path}")
    return 0


def _compile(args: argparse.Namespace) -> int:
    import signal

    from .keypoints import get_format
    from .solvers.compiled_step import CompiledStep
    from .solvers.refine import FREE_JOINTS, RefineSettings

    # stopped by a node that shuts down (BackgroundCompiler.close): leave no half-written temporary folder behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    defaults = RefineSettings()
    damping = defaults.damping if args.damping is None else args.damping
    weak_cm = defaults.weak_dof_cm if args.weak_dof_cm is None else args.weak_dof_cm
    formats = [get_format(name.strip()) for name in args.format.split(",") if name.strip()]  # unknown: KeyError, exit 2
    if not formats:
        raise ValueError("--format needs at least one keypoint format name (e.g. coco17)")
    for fmt in formats:
        path = CompiledStep.package_path(fmt, FREE_JOINTS, damping, weak_cm, args.cache_dir)
        cached = path.is_file()
        start = time.perf_counter()
        try:
            step = CompiledStep.load(fmt, FREE_JOINTS, damping, weak_cm, args.cache_dir)
        except Exception as err:  # noqa: BLE001 - torch.export / AOTInductor / the C++ compiler, in their words
            print(f"dposer: error: could not compile the solver's step for {fmt.name} ({type(err).__name__}: "
                  f"{str(err)[:500]}); AOTInductor needs a C++ compiler (g++) and a writable cache folder; the "
                  "refiner runs the eager step without it", file=sys.stderr)
            return 1
        assert step is not None
        print(f"{fmt.name}: {step.path} ({'cached' if cached else f'compiled in {time.perf_counter() - start:.0f} s'})")
    return 0


def _default_prior() -> Path | None:
    root = Path(__file__).resolve().parents[1]
    for candidate in (root / "models" / "dposer_cpu" / "prior.pt", root / "runs" / "prior_cpu" / "prior.pt"):
        if candidate.is_file():
            return candidate
    return None


def _bench(args: argparse.Namespace) -> int:
    from .backends import BackendError
    from .backends.bench import BenchConfig, markdown, plot, run_bench, save

    prior = args.prior or _default_prior()
    if prior is None:
        print("dposer: error: no prior found (models/dposer_cpu/prior.pt, runs/prior_cpu/prior.pt); pass --prior",
              file=sys.stderr)
        return 2
    ints = lambda text: tuple(int(v) for v in text.split(","))  # noqa: E731
    cfg = BenchConfig(prior=prior, onnx=args.onnx, backends=tuple(args.backends.split(",")), persons=ints(args.persons),
                      steps=ints(args.steps), formats=tuple(args.formats.split(",")), budget_s=args.budget,
                      threads=args.threads, full=not args.no_full, compiled_step=args.compiled_step,
                      frame_graph=args.frame_graph)
    try:
        result = run_bench(cfg)
    except BackendError as err:
        print(f"dposer: error: {err}", file=sys.stderr)
        return 1
    result["command"] = "dposer " + " ".join(sys.argv[1:])
    print(f"\nmachine: {result['machine']}\nload average (1/5/15 min) at start, at end: {result['load_average']}\n")
    print(markdown(result))
    print(f"\nresults: {save(result, args.json)}\nfigure: {plot(result, args.figure)}  ({result['seconds']:.0f} s)")
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

    from .ros.commands import add_demo_arguments, add_record_arguments, add_replay_arguments

    smp = commands.add_parser("sample", help="generate poses with the prior; realism and diversity numbers, picture")
    smp.add_argument("--prior", type=Path, default=Path("models/dposer_cpu/prior.pt"), help="prior checkpoint")
    smp.add_argument("--dataset", type=Path, default=default_dataset_path(), help="dataset (held-out poses)")
    smp.add_argument("--num", type=int, default=256, help="poses to sample")
    smp.add_argument("--steps", type=int, default=1000, help="Euler-Maruyama steps (published: 1000)")
    smp.add_argument("--reference", type=int, default=20000, help="held-out poses to compare with")
    smp.add_argument("--show", type=int, default=12, help="poses in the picture")
    smp.add_argument("--seed", type=int, default=0)
    smp.add_argument("--threads", type=int, default=1)
    smp.add_argument("--out", type=Path, default=Path("out/samples"), help="output folder")
    smp.set_defaults(func=_sample)

    base = commands.add_parser("baselines", help="fit the GMM (SMPLify) and VAE (VPoser) baseline priors")
    base.add_argument("--dataset", type=Path, default=default_dataset_path(), help="dataset file")
    base.add_argument("--out", type=Path, default=Path("models/dposer_cpu/baselines"), help="output folder")
    base.add_argument("--components", type=int, default=8, help="GMM components per part group")
    base.add_argument("--vae-steps", type=int, default=3000, help="VAE training steps per part group")
    base.add_argument("--threads", type=int, default=1, help="torch threads")
    base.set_defaults(func=_baselines)

    comp = commands.add_parser("completion", help="train the completion of hidden body joints from the seen ones")
    comp.add_argument("--dataset", type=Path, default=default_dataset_path(), help="dataset file")
    comp.add_argument("--out", type=Path, default=Path("models/dposer_cpu/completion.pt"), help="output file")
    comp.add_argument("--steps", type=int, default=15000, help="training steps (batch 512)")
    comp.add_argument("--seed", type=int, default=0, help="random seed")
    comp.add_argument("--threads", type=int, default=1, help="torch threads")
    comp.set_defaults(func=_completion)

    mot = commands.add_parser("motion", help="train the motion model of hidden legs (their rotations from a second of "
                                             "the rest of the body's motion)")
    mot.add_argument("--dataset", type=Path, default=default_dataset_path(), help="dataset file")
    mot.add_argument("--config", type=Path, default=Path("config/train/motion.yaml"), help="training settings")
    mot.add_argument("--out", type=Path, default=Path("models/dposer_cpu/motion.pt"), help="output file")
    mot.set_defaults(func=_motion)

    demo = commands.add_parser("demo", help="the end-to-end demo: the refine node on a held-out take, by default "
                                            "with its left arm hidden (cam_occl_limb, seed 0)")
    add_demo_arguments(demo)
    demo.set_defaults(func=_demo)

    replay = commands.add_parser("replay", help="publish a held-out take through a sensor model (or a bag) to the node")
    add_replay_arguments(replay)
    replay.set_defaults(func=_replay)

    rec = commands.add_parser("record", help="record the refine node's output topics to an MCAP bag")
    add_record_arguments(rec)
    rec.set_defaults(func=_record)

    xp = commands.add_parser("export-poses", help="the refined people of a recorded bag as AMASS-style SMPL-X npz files")
    xp.add_argument("bag", type=Path, help="rosbag2 folder or .mcap file with dposer_msgs/SmplxPoseArray messages")
    xp.add_argument("--out", type=Path, required=True, help="OUT.npz: writes OUT_<person>.npz per person")
    xp.add_argument("--topic", default=None, help="topic to read (default: every SmplxPoseArray topic)")
    xp.set_defaults(func=_export_poses)

    from .evaluation.command import add_arguments as eval_arguments

    ev = commands.add_parser("eval", help="evaluate methods on corrupted test clips (accuracy, latency)")
    eval_arguments(ev)
    ev.set_defaults(func=_eval)

    from .evaluation.compare import add_arguments as compare_arguments
    from .evaluation.compare import run as run_compare

    cmp = commands.add_parser("compare", help="compare methods of `dposer eval` runs clip by clip (bootstrap intervals)")
    compare_arguments(cmp)
    cmp.set_defaults(func=run_compare)

    co = commands.add_parser("compile", help="compile the refiner's step ahead of time (AOTInductor) into the cache")
    co.add_argument("--format", required=True, help="keypoint format(s), comma-separated (e.g. coco17,h36m17)")
    co.add_argument("--damping", type=float, default=None, help="the refiner's damping (default: its default)")
    co.add_argument("--weak-dof-cm", type=float, default=None, help="the refiner's weak hold scale (default: its default)")
    co.add_argument("--cache-dir", type=Path, default=None,
                    help="package folder (default: $DPOSER_ENGINE_DIR, else models/engines in a writable checkout, "
                         "else ~/.cache/dposer_ros/engines)")
    co.set_defaults(func=_compile)

    ex = commands.add_parser("export", help="export the prior's score network to ONNX and check it against torch")
    ex.add_argument("--prior", type=Path, required=True, help="prior checkpoint (prior.pt)")
    ex.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    ex.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted |torch - onnxruntime| (default 1e-4)")
    ex.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")
    ex.add_argument("--tensorrt", action="store_true", help="also build the TensorRT FP16 engine into the cache")
    ex.add_argument("--engine-dir", type=Path, default=None, help="engine cache (default: models/engines)")
    ex.add_argument("--rebuild", action="store_true", help="rebuild the TensorRT engine even if cached")
    ex.set_defaults(func=_export)

    be = commands.add_parser("bench", help="latency/throughput of the few-step refiner per inference backend")
    be.add_argument("--prior", type=Path, default=None, help="prior checkpoint (default: models/dposer_cpu, runs/prior_cpu)")
    be.add_argument("--onnx", type=Path, default=None, help="exported file (default: beside the prior, else exported)")
    from .backends.bench import BENCH_BACKENDS

    be.add_argument("--backends", default=",".join(BENCH_BACKENDS),
                    help="comma-separated (onnxruntime-int8: int8 weights); unavailable ones are skipped")
    be.add_argument("--persons", default="1,4,16,64", help="people per call, comma-separated")
    be.add_argument("--steps", default="1,2,4,8", help="refinement steps, comma-separated")
    be.add_argument("--formats", default="coco17", help="keypoint formats of the grid (1-person profile: coco17, smplx55)")
    be.add_argument("--budget", type=float, default=90.0, help="seconds for the whole grid (at least 3 calls per cell)")
    be.add_argument("--threads", type=int, default=1,
                    help="torch and onnxruntime intra-op threads (default 1: with 2 on the 2-core dev machine, torch's "
                         "network call took ~70x longer while another process was busy)")
    be.add_argument("--compiled-step", action="store_true",
                    help="the refiners' step compiled ahead of time (the node's `compiled_step`; `dposer compile`)")
    be.add_argument("--frame-graph", choices=("cpu", "cuda", "tensorrt"), default=None,
                    help="warm frames' prior steps as one ONNX graph in ONNX Runtime on this device (the node's "
                         "`frame_graph`; exported on first use, a minute per format and step count to load on a "
                         "small CPU); its network time is inside the graph, not in the network share")
    be.add_argument("--no-full", action="store_true", help="skip timing the full DPoser optimisation")
    be.add_argument("--json", type=Path, default=Path("out/bench/backends.json"), help="raw results")
    be.add_argument("--figure", type=Path, default=Path("bench/figures/backends.png"), help="plot (PNG)")
    be.set_defaults(func=_bench)
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
