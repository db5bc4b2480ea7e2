"""`dposer demo`, `dposer replay` and `dposer record`: arguments and implementations.

Argument definitions import nothing heavy (the `dposer` parser is built without rclpy); the run functions
import rclpy and the nodes when called.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from pathlib import Path

DEMO_TAKE = "dataset-1_walk_normal_001"  # a held-out (test split) Bandai walk, 6.5 s
DEMO_CORRUPTION = "cam_occl_limb"  # camera-style: COCO-17, 2 cm noise, one limb hidden (seed 0: the left arm)


# ----------------------------------------------------------------------------------------------- arguments


def _stream_arguments(p: argparse.ArgumentParser, take: str, corruption: str) -> None:
    p.add_argument("--take", default=take,
                   help=f"held-out take: 'test:N' (N-th test take), a take index or (part of) its name (default {take})")
    p.add_argument("--corruption", default=corruption,
                   help="sensor model of config/eval/corruptions.yaml, e.g. cam_occl_legs (alias "
                        f"camera_occlusion_legs), cam_noise_4cm, cam_occl_limb, radar (10 Hz) (default {corruption})")
    p.add_argument("--frames", type=int, default=None, help="replay at most this many frames of the take")
    p.add_argument("--seed", type=int, default=0, help="seed of the corruption's random draws")
    p.add_argument("--dataset", type=Path, default=None, help="dataset file (default: the one `dposer data build` wrote)")
    p.add_argument("--any-split", action="store_true", help="allow takes outside the test split")


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    _stream_arguments(p, DEMO_TAKE, DEMO_CORRUPTION)
    p.add_argument("--model", type=Path, default=None,
                   help="prior checkpoint (default: the shipped models/dposer_cpu/prior.pt)")
    p.add_argument("--steps", type=int, default=None,
                   help="refinement steps per frame (1-8; default: the node's, RefineSettings.steps)")
    p.add_argument("--rate", default="realtime", help="realtime (default), lockstep, or a speed factor such as 2")
    p.add_argument("--floor-height", type=float, default=None,
                   help="the node's floor_height (default: the take's capture ground where it is known; nan: unknown)")
    p.add_argument("--keypoint-noise-cm", type=float, default=None,
                   help="the node's keypoint_noise_cm (default: the noise the corruption states, as a user configures "
                        "the node for a sensor; nan: unknown, no keypoint filter)")
    p.add_argument("--out", type=Path, default=Path("out"), help="folder for the demo's picture")
    p.add_argument("--quiet", action="store_true", help="print the summary only, not every frame")
    p.add_argument("--retarget", action="store_true",
                   help="also draw the old retargeting picture (retargets 3 takes of --mocap-dir; ~1 min)")
    from ..paths import default_mocap_dir

    p.add_argument("--mocap-dir", type=Path, default=default_mocap_dir(), help="mocap sources (for --retarget)")


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    _stream_arguments(p, "test:0", DEMO_CORRUPTION)
    p.add_argument("--rate", default="realtime",
                   help="realtime (the corruption's own rate: 30 Hz, radar 10 Hz), lockstep (next frame when the "
                        "answer arrives), or a speed factor such as 2")
    p.add_argument("--topic", default=None,
                   help="take mode: topic to publish Keypoints3DArray on (default keypoints); "
                        "bag mode: the bag's topic(s) to play, comma-separated (default: all)")
    p.add_argument("--poses-topic", default="smplx_poses", help="where the refine node answers (take mode)")
    p.add_argument("--person-id", default="replay_0", help="person_id of the replayed person")
    p.add_argument("--no-listen", action="store_true", help="do not wait for / score the node's answers")
    p.add_argument("--wait", type=float, default=20.0, help="seconds to wait for a refine node to subscribe")
    p.add_argument("--bag", type=Path, default=None,
                   help="play a rosbag2 bag (folder or .mcap) instead of a take, with its recorded timing")


def add_record_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True,
                   help="bag to write: NAME.mcap becomes the rosbag2 folder NAME/ holding NAME.mcap + metadata.yaml")
    p.add_argument("--topics", default="smplx_poses,skeleton_markers,/diagnostics",
                   help="comma-separated topics (default: the refine node's outputs)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")


# ----------------------------------------------------------------------------------------------- helpers


def _load_stream(args):
    from ..dataset.poses import default_dataset_path, load_dataset
    from ..replay.takes import corrupt_take, get_corruption, load_take

    path = args.dataset or default_dataset_path()
    if path.is_file() or getattr(args, "mocap_dir", None) is None:
        take = load_take(args.take, load_dataset(path), any_split=args.any_split, max_frames=args.frames)
    else:  # no dataset built on this machine: retarget the one take from the mocap folder (a few seconds)
        from ..replay.takes import retarget_take

        print(f"{path} not found: retargeting take {args.take} from {args.mocap_dir}")
        take = retarget_take(args.take, args.mocap_dir, args.frames)
        if take.split != "test" and not args.any_split:
            raise ValueError(f"take {take.name!r} is in the {take.split} split, not held out")
    corruption = get_corruption(args.corruption)
    return corrupt_take(take, corruption, seed=args.seed)


class _Spinner:
    """An executor spinning `nodes` in a background thread."""

    def __init__(self, *nodes) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=nodes[0].context)
        for n in nodes:
            self.executor.add_node(n)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - shutdown races
            pass

    def stop(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=2.0)


def _frame_line(res, frame) -> str:
    if res.empty:
        return f"frame {res.frame:4d}  (too few visible keypoints: nobody sent)"
    if res.latency_ms is None:
        return f"frame {res.frame:4d}  no answer (dropped: a newer frame won, or lost: best-effort input)"
    if res.mpjpe_mm is None:
        return f"frame {res.frame:4d}  latency {res.latency_ms:6.1f} ms  (empty answer)"
    occ = f"  occluded {res.mpjpe_occluded_mm:5.1f}" if res.mpjpe_occluded_mm is not None else ""
    vis = f"  visible {res.mpjpe_visible_mm:5.1f}" if res.mpjpe_visible_mm is not None else ""
    return (f"frame {res.frame:4d}  latency {res.latency_ms:6.1f} ms  solver {res.refine_ms:6.1f} ms  "
            f"MPJPE {res.mpjpe_mm:5.1f} mm{vis}{occ}")


def summarize(results) -> dict:
    import numpy as np

    answered = [r for r in results if r.latency_ms is not None and not r.empty]
    scored = [r for r in answered if r.mpjpe_mm is not None]
    pct = lambda v, q: float(np.percentile(v, q)) if len(v) else float("nan")  # noqa: E731
    lat = [r.latency_ms for r in answered]
    ref = [r.refine_ms for r in scored]
    occ = [r.mpjpe_occluded_mm for r in scored if r.mpjpe_occluded_mm is not None]
    vis = [r.mpjpe_visible_mm for r in scored if r.mpjpe_visible_mm is not None]
    return {
        "frames": len(results), "answered": len(answered), "empty": sum(r.empty for r in results),
        "latency_p50_ms": pct(lat, 50), "latency_p99_ms": pct(lat, 99),
        "solver_p50_ms": pct(ref, 50),
        "mpjpe_mm": float(np.mean([r.mpjpe_mm for r in scored])) if scored else float("nan"),
        "mpjpe_visible_mm": float(np.mean(vis)) if vis else float("nan"),
        "mpjpe_occluded_mm": float(np.mean(occ)) if occ else float("nan"),
    }


def _summary_text(s: dict) -> str:
    return (f"{s['answered']}/{s['frames'] - s['empty']} frames answered; end-to-end latency p50 {s['latency_p50_ms']:.1f} ms, "
            f"p99 {s['latency_p99_ms']:.1f} ms (solver p50 {s['solver_p50_ms']:.1f} ms); body MPJPE "
            f"{s['mpjpe_mm']:.1f} mm (visible joints {s['mpjpe_visible_mm']:.1f} mm, occluded "
            f"{s['mpjpe_occluded_mm']:.1f} mm)")


# ----------------------------------------------------------------------------------------------- demo


def run_demo(args) -> int:
    """Start the refine node (a subprocess, on the shipped prior), replay a held-out take with camera-style
    occlusion at 30 Hz, print per-frame latency and MPJPE, and draw input keypoints vs refined bodies.

    The node runs in its own process, as on a robot: in-process it would share one GIL with the replay and
    its executor, which measurably delays and drops frames on a busy 2-core machine.
    """
    t_start = time.monotonic()
    from ..paths import config_path
    from .refine_node import default_model_path

    model = args.model or default_model_path()
    if not Path(model).is_file():
        print(f"dposer demo: no prior at {model}. Train one (`dposer train --config config/train/cpu.yaml`) and copy "
              "runs/prior_cpu/prior.pt to models/dposer_cpu/prior.pt, or pass --model PATH.", file=sys.stderr)
        return 2
    from .params import BY_NAME, check_value

    problem = None if args.keypoint_noise_cm is None else check_value(BY_NAME["keypoint_noise_cm"], args.keypoint_noise_cm)
    if problem is not None:
        print(f"dposer demo: --keypoint-noise-cm: {problem}", file=sys.stderr)
        return 2
    stream = _load_stream(args)
    print(f"take {stream.take.name} ({stream.take.split} split, {len(stream.take)} frames), corruption "
          f"{stream.corruption}: {stream.format_name} at {stream.rate_hz:.0f} Hz, {len(stream.frames)} frames")

    import random

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray

    from .convert import diagnostic_values
    from .process import NodeProcess
    from .replay_publisher import ReplayClient, play_stream

    domain = int(os.environ.get("ROS_DOMAIN_ID") or random.randint(100, 199))  # own domain unless one is set
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "demo_refine_node.log"
    params: dict[str, object] = {"model_path": Path(model).resolve(), "input_format": stream.format_name}
    if args.steps is not None:  # else the node's own default (config/refine.yaml)
        params["steps"] = int(args.steps)
    from ..evaluation.foreign import source_floor

    floor = source_floor(stream.take.source) if args.floor_height is None else args.floor_height
    if floor is not None and math.isfinite(floor):  # the stream's z is the capture's up: its ground stays at height
        params["floor_height"] = float(floor)
    print(f"floor_height: {params.get('floor_height', 'unknown')}")
    from ..replay.takes import get_corruption

    noise_cm = 100.0 * get_corruption(args.corruption).stated_noise_m if args.keypoint_noise_cm is None \
        else args.keypoint_noise_cm
    if math.isfinite(noise_cm):
        params["keypoint_noise_cm"] = float(noise_cm)
    print(f"keypoint_noise_cm: {params.get('keypoint_noise_cm', 'unknown')}")
    from ..keypoints import get_format
    from ..solvers.compiled_step import CompiledStep
    from ..solvers.refine import FREE_JOINTS, RefineSettings

    # the node's step compiled ahead of time (its default compiled_step): made here once, before the node starts
    solver, fmt = RefineSettings(), get_format(stream.format_name)
    path = CompiledStep.package_path(fmt, FREE_JOINTS, solver.damping, solver.weak_dof_cm)
    if not path.is_file():
        print("compiling the solver's step ahead of time (first run only, about half a minute)", flush=True)
        started = time.monotonic()
        try:
            CompiledStep.for_refiner(fmt, solver)
            print(f"compiled in {time.monotonic() - started:.0f} s")
        except Exception as err:  # noqa: BLE001 - e.g. no C++ compiler here: the node runs the eager step
            print(f"dposer demo: could not compile the solver's step ({type(err).__name__}: {str(err)[:300]}); "
                  "the node runs the eager step", file=sys.stderr)
    print(f"solver step: {path if path.is_file() else 'eager'}")
    node = NodeProcess(params, log_path, domain, localhost_only=False)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    client = spinner = None
    diag: dict = {}
    try:
        client = ReplayClient("dposer_demo", context=ctx)
        client.create_subscription(DiagnosticArray, "/diagnostics",
                                   lambda m: diag.update(diagnostic_values(m)), 10)
        tf_seen: list = []  # REP 155 frames as a subscriber sees them (hri_output)
        try:
            from tf2_msgs.msg import TFMessage

            client.create_subscription(TFMessage, "/tf", lambda m: tf_seen.append(m) if len(tf_seen) < 400 else None, 100)
        except ImportError:
            pass
        spinner = _Spinner(client)
        end = time.monotonic() + 90.0  # the node imports torch, loads the prior (first use: exports ONNX)
        while not client.wait_connected(0.5):
            if not node.alive() or time.monotonic() > end:
                print(f"dposer demo: the refine node did not come up; its log ({log_path}):\n"
                      + log_path.read_text()[-2000:], file=sys.stderr)
                return 1
        time.sleep(0.5)  # matched both ways; let discovery settle so the first best-effort frames arrive
        print(f"refine_node (pid {node.pid}, ROS_DOMAIN_ID={domain}) up on {Path(model)} after "
              f"{time.monotonic() - t_start:.1f} s; replaying at {args.rate}; node log: {log_path}")
        on_frame = None if args.quiet else (lambda res, frame: print(_frame_line(res, frame), flush=True))
        results = play_stream(client, stream, rate=args.rate, on_frame=on_frame)
        summary = summarize(results)
        time.sleep(1.2)  # one more /diagnostics period
    finally:
        if spinner is not None:
            spinner.stop()
        if client is not None:
            client.destroy_node()
        rclpy.try_shutdown(context=ctx)
        node.stop()
    print(_summary_text(summary))
    if diag:
        print(f"node /diagnostics: backend {diag.get('backend')}, solver step {diag.get('solver_step')}, "
              f"{diag.get('frames_in')} frames in, "
              f"{diag.get('frames_out')} out, {diag.get('drops')} dropped (latest wins), "
              f"{diag.get('malformed_total')} malformed")
    picture = demo_figure(stream, results, args.out / "demo_refine.png")
    print(f"picture: {picture}")
    if tf_seen:
        print(f"picture: {tf_figure(tf_seen, args.out / 'demo_tf.png')}")
    if args.retarget:
        from ..dataset.build import BuildConfig, build_dataset
        from ..dataset.figure import retarget_figure

        config = BuildConfig.from_yaml(config_path("data/build.yaml"))
        _, built = build_dataset(args.mocap_dir, config, args.out / "demo_dataset.npz", max_takes=3)
        print(f"picture: {retarget_figure(built, args.out / 'demo_retarget.png', config.fps)}")
    print(f"demo took {time.monotonic() - t_start:.1f} s")
    return 0


def tf_figure(messages: list, path: Path, panels: int = 3) -> Path:
    """The REP 155 TF frames of the demo's body, drawn from the received /tf messages alone: every joint frame
    `<joint>_<id>` composed with `body_<id>`, its axes (x red, y green, z blue) and the bones between them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..body import smplx_neutral
    from .core import quat_to_matrix

    def matrix(t) -> np.ndarray:
        m = np.eye(4)
        q, p = t.transform.rotation, t.transform.translation
        m[:3, :3], m[:3, 3] = quat_to_matrix([q.x, q.y, q.z, q.w]), [p.x, p.y, p.z]
        return m

    sk = smplx_neutral()
    stamps = [m for m in messages if any(t.child_frame_id.startswith("body_") for t in m.transforms)]
    picks = [stamps[int(i)] for i in np.linspace(0, len(stamps) - 1, min(panels, len(stamps)))]
    fig = plt.figure(figsize=(4.5 * len(picks), 5))
    for i, msg in enumerate(picks):
        frames = {t.child_frame_id: t for t in msg.transforms}
        body_name = next(n for n in frames if n.startswith("body_"))
        bid = body_name[len("body_"):]
        body = matrix(frames[body_name])
        world = np.stack([body @ matrix(frames[f"{n}_{bid}"]) for n in sk.names[:22]])
        ax = fig.add_subplot(1, len(picks), i + 1, projection="3d")
        for j, p in enumerate(sk.parents[:22]):
            if p >= 0:
                ax.plot(*zip(world[p, :3, 3], world[j, :3, 3]), color="0.4", lw=1.5)
        for m in world:
            for axis, color in zip(range(3), ("r", "g", "b")):
                ax.plot(*zip(m[:3, 3], m[:3, 3] + 0.08 * m[:3, axis]), color=color, lw=1)
        ax.plot(*zip(body[:3, 3], body[:3, 3] + 0.25 * body[:3, 0]), color="r", lw=3)  # body_<id>: x forward
        ax.plot(*zip(body[:3, 3], body[:3, 3] + 0.25 * body[:3, 2]), color="b", lw=3)  # ... z up
        centre = world[:, :3, 3].mean(0)
        for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre):
            setter(c - 0.9, c + 0.9)
        ax.set_box_aspect((1, 1, 1))
        t = [m.transforms[0].header.stamp for m in (picks[0], msg)]
        ax.set_title(f"body_{bid} in {frames[body_name].header.frame_id}, "
                     f"+{(t[1].sec - t[0].sec) + (t[1].nanosec - t[0].nanosec) * 1e-9:.1f} s", fontsize=9)
    fig.suptitle("REP 155 TF frames as a subscriber receives them: body_<id> (thick) and the 22 body joint frames "
                 "<joint>_<id> (x red, y green, z blue)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def demo_figure(stream, results, path: Path, panels: int = 4) -> Path:
    """Input keypoints (visible, black) over the refined mannequin, ground-truth skeleton in grey, a few frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..body import smplx_neutral
    from ..body.render import draw_body, draw_skeleton, frame_axes
    from ..replay.takes import R_ROS_FROM_DATASET, to_dataset_frame
    from .core import PersonResult, transform_result

    scored = [r for r in results if r.mpjpe_mm is not None]
    if not scored:
        return path
    picks = [scored[int(i)] for i in np.linspace(0, len(scored) - 1, min(panels, len(scored)))]
    frames = {f.seq: f for f in stream.frames}
    parents = smplx_neutral().parents
    fig = plt.figure(figsize=(4 * len(picks), 4.6))
    for i, res in enumerate(picks):
        frame = frames[res.seq]
        ax = fig.add_subplot(1, len(picks), i + 1, projection="3d")
        body = transform_result(PersonResult("", res.pose, res.transl, res.joints, np.zeros(4), np.zeros(4, bool), 0.0),
                                R_ROS_FROM_DATASET.T, np.zeros(3))
        draw_body(ax, body.pose, body.transl, stride=2)
        ax.collections[-1].set_alpha(0.5)  # see the keypoints and the truth through the mannequin
        gt = to_dataset_frame(frame.gt_joints)
        draw_skeleton(ax, gt[:22], parents[:22], color=(0.25, 0.25, 0.25), marker_size=3,
                      label="ground truth (body joints)" if i == 0 else None)
        vis = to_dataset_frame(frame.points[frame.visible])
        if len(vis):
            ax.scatter(*vis[:, [0, 2, 1]].T, color=(0.85, 0.1, 0.1), s=22, depthshade=False, zorder=10,
                       label="input keypoints (visible)" if i == 0 else None)
        frame_axes(ax, np.concatenate([gt, body.joints]), title=f"frame {res.frame}: MPJPE {res.mpjpe_mm:.0f} mm"
                   + (f"\n(occluded joints {res.mpjpe_occluded_mm:.0f} mm)" if res.mpjpe_occluded_mm else ""))
    fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"{stream.take.name.split('/')[-1]} through {stream.corruption} ({stream.format_name}): "
                 "input keypoints vs refined SMPL-X body (refine_node)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------- replay


def run_replay(args) -> int:
    import rclpy

    rclpy.init()
    try:
        if args.bag is not None:
            return _replay_bag(args)
        return _replay_take(args)
    finally:
        rclpy.try_shutdown()


def _replay_take(args) -> int:
    from .replay_publisher import ReplayClient, play_stream

    stream = _load_stream(args)
    print(f"take {stream.take.name} ({stream.take.split} split), corruption {stream.corruption}: "
          f"{stream.format_name} at {stream.rate_hz:.0f} Hz, {len(stream.frames)} frames, frame_id {stream.frame_id!r}")
    client = ReplayClient("dposer_replay", keypoints_topic=args.topic or "keypoints", poses_topic=args.poses_topic)
    spinner = _Spinner(client)
    try:
        topic = client.pub.topic_name
        end = time.monotonic() + args.wait
        while client.pub.get_subscription_count() == 0 and time.monotonic() < end:
            time.sleep(0.05)
        if client.pub.get_subscription_count() == 0:
            print(f"no subscriber on {topic} after {args.wait:.0f} s; publishing anyway")
        listen = not args.no_listen and client.sub.get_publisher_count() > 0
        time.sleep(0.5)  # let discovery settle so the first best-effort frames arrive
        on_frame = (lambda res, frame: print(_frame_line(res, frame), flush=True)) if listen else None
        results = play_stream(client, stream, rate=args.rate, person_id=args.person_id, on_frame=on_frame,
                              answer_timeout=2.0 if listen else 0.0)
        if listen:
            print(_summary_text(summarize(results)))
        else:
            print(f"published {len(results)} frames on {topic}")
    finally:
        spinner.stop()
        client.destroy_node()
    return 0


def _replay_bag(args) -> int:
    from rclpy.node import Node

    from ..replay.bags import read_bag
    from .replay_publisher import play_bag

    topics = [t for t in (args.topic or "").split(",") if t] or None
    speed = 0.0 if args.rate == "lockstep" else 1.0 if args.rate == "realtime" else float(args.rate.rstrip("x"))
    node = Node("dposer_bag_replay")
    try:
        count = play_bag(node, read_bag(args.bag, topics), speed=speed)
    finally:
        node.destroy_node()
    print(f"published {count} messages from {args.bag}")
    return 0


# ----------------------------------------------------------------------------------------------- record


def run_record(args) -> int:
    import rclpy

    from .recorder import record

    topics = [t for t in args.topics.split(",") if t]
    rclpy.init()
    try:
        writer = record(args.out, topics, args.duration)
    finally:
        rclpy.try_shutdown()
    counts = ", ".join(f"{t}: {n}" for t, n in writer.counts.items()) or "nothing"
    print(f"bag {writer.folder} ({writer.file}): {counts}")
    return 0
