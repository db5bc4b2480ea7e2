"""The refine core under hostile input: poisoned keypoints, failing solves, huge messages, floods of new ids.

Every case here made the core publish NaN or 1e22 m bodies, or stall tracked people, before track health checks and
bounded cycles (issue 15). The core runs on a tiny untrained prior: what is tested is bookkeeping, not accuracy.
"""

import math
import time
from collections import deque

import numpy as np
import pytest
import torch

from dposer_msgs.msg import Keypoints3D, Keypoints3DArray
from dposer_ros.body import ForwardKinematics
from dposer_ros.keypoints import get_format
from dposer_ros.prior.layout import DIM
from dposer_ros.prior.model import Normalizer, PosePrior
from dposer_ros.prior.network import ScoreNet
from dposer_ros.prior.sde import SubVPSDE
from dposer_ros.ros import adapters, core
from dposer_ros.ros.params import BY_NAME, check_command_line, check_value
from dposer_ros.solvers.refine import FewStepRefiner

FORMAT = "coco17"
K = get_format(FORMAT).num_keypoints
BAD_VALUES = (np.inf, -np.inf, np.nan, 1e39, 1e30)
FLOOD_HZ = 5000.0  # messages a second of the flood test


@pytest.fixture(scope="module")
def prior():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = ScoreNet(hidden=64, blocks=1, time_dim=32, groups=8)
    return PosePrior(net, SubVPSDE(), Normalizer(torch.randn(DIM) * 0.05, torch.rand(DIM) * 0.3 + 0.2)).eval()


def make_core(prior, **kw) -> core.RefineCore:
    settings = dict(input_format=FORMAT, person_timeout=60.0, latency_budget_ms=0.0) | kw
    return core.RefineCore(prior, core.CoreSettings(**settings))


def keypoints(seed: int = 0, transl=(0.0, 0.0, 2.0)) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    pose = torch.randn(1, 55, 3, generator=gen, dtype=torch.float64) * 0.15
    posed = ForwardKinematics()(pose, torch.tensor([transl], dtype=torch.float64))
    return get_format(FORMAT).from_posed(posed)[0].numpy()


def frame(people, t: float, frame_id: str = "w") -> core.InputFrame:
    return core.InputFrame(int(t * 1e9), frame_id, people)


def drain(c: core.RefineCore) -> list[core.PersonResult]:
    out = []
    while c.pending:
        out += [r for f in c.refine_pending() for r in f.people]
    return out


def assert_sane(results, near: np.ndarray) -> None:
    for r in results:
        assert not r.failed
        for v in (r.pose, r.transl, r.joints, r.betas):
            assert np.isfinite(v).all()
        center = np.median(near, axis=0)
        assert np.abs(r.joints).max() < 100.0 and np.linalg.norm(r.joints - center, axis=-1).max() < 2.5


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("new_track", [False, True])
def test_a_missing_keypoint_of_any_value_never_poisons_a_track(prior, value, new_track):
    """Confidence 0 marks a keypoint missing whatever it holds (Inf, NaN, 1e39, 1e30): answers stay finite and at
    the person, on a warm track and on a new one, and the next frames too."""
    c = make_core(prior)
    pts, conf = keypoints(1), np.ones(K)
    if not new_track:
        c.submit(frame([core.PersonInput("A", pts, conf)], 1.0))
        assert_sane(drain(c), pts)
    bad = pts.copy()
    bad[3] = value
    bad_conf = conf.copy()
    bad_conf[3] = 0.0
    for i in range(3):
        errors = c.submit(frame([core.PersonInput("A", bad if i == 0 else pts, bad_conf if i == 0 else conf)], 2.0 + i))
        assert errors == []
        out = drain(c)
        assert len(out) == 1
        assert_sane(out, pts)


@pytest.mark.parametrize("value", [1e39, 1e30, -1e30])
def test_a_confident_absurd_keypoint_is_an_outlier(prior, value):
    """One confident coordinate at 1e30 (finite in float64) or 1e39 (infinite in float32): that keypoint is treated
    as missing and counted; the person is answered where the other keypoints are, on a new track too."""
    c = make_core(prior)
    pts = keypoints(2)
    bad = pts.copy()
    bad[5, 1] = value
    assert c.submit(frame([core.PersonInput("B", bad, np.ones(K))], 1.0)) == []
    out = drain(c)
    assert_sane(out, pts)
    assert c.stats.outlier_points == 1
    assert np.isnan(out[0].points[5]).all() and out[0].confidences[5] == 0.0  # what the solver saw


def test_a_confident_infinite_keypoint_is_refused_and_the_track_recovers(prior):
    c = make_core(prior)
    pts = keypoints(3)
    c.submit(frame([core.PersonInput("C", pts, np.ones(K))], 1.0))
    drain(c)
    bad = pts.copy()
    bad[0, 0] = np.inf
    errors = c.submit(frame([core.PersonInput("C", bad, np.ones(K))], 2.0))
    assert [e.reason for e in errors] == ["non_finite"] and c.stats.malformed["non_finite"] == 1
    c.submit(frame([core.PersonInput("C", pts, np.ones(K))], 3.0))
    assert_sane(drain(c), pts)


def test_a_failed_solve_is_answered_as_failed_and_the_track_restarts_cold(prior, monkeypatch):
    c = make_core(prior)
    pts = keypoints(4)
    c.submit(frame([core.PersonInput("D", pts, np.ones(K))], 1.0))
    drain(c)
    call = FewStepRefiner.__call__

    def poisoned(self, obs, init=None):
        res = call(self, obs, init)
        res.joints = res.joints * float("nan")
        return res

    monkeypatch.setattr(FewStepRefiner, "__call__", poisoned)
    c.submit(frame([core.PersonInput("D", pts, np.ones(K))], 2.0))
    (res,) = drain(c)
    assert res.failed and res.joints.shape == (0, 3) and np.all(res.pose == 0) and c.stats.failed == 1
    assert c._tracks["D"].state is None  # no poisoned warm start
    monkeypatch.setattr(FewStepRefiner, "__call__", call)
    c.submit(frame([core.PersonInput("D", pts, np.ones(K))], 3.0))
    assert_sane(drain(c), pts)


def test_a_solver_exception_answers_every_person_of_the_batch_as_failed(prior, monkeypatch):
    c = make_core(prior)

    def broken(self, obs, init=None):
        raise RuntimeError("singular system")

    monkeypatch.setattr(FewStepRefiner, "__call__", broken)
    c.submit(frame([core.PersonInput(p, keypoints(i), np.ones(K)) for i, p in enumerate("EF")], 1.0))
    out = drain(c)
    assert [r.failed for r in out] == [True, True] and c.stats.failed == 2
    assert c.stats.errors["solver"] == 1 and "singular system" in c.stats.take_errors()[0][1]


def test_far_from_the_keypoints_is_a_failed_answer(prior):
    """A finite body whose joints lie metres from the keypoints (1e22 m translations came from one bad point)."""
    c = make_core(prior)
    pts = keypoints(5)
    c.submit(frame([core.PersonInput("G", pts, np.ones(K))], 1.0))
    (res,) = drain(c)
    state = c._tracks["G"].state
    state.transl += 1e22  # what a poisoned warm start looked like
    c.submit(frame([core.PersonInput("G", pts, np.ones(K))], 2.0))
    (res,) = drain(c)
    assert res.failed and c._tracks["G"].state is None
    c.submit(frame([core.PersonInput("G", pts, np.ones(K))], 3.0))
    assert_sane(drain(c), pts)


def test_a_huge_message_is_capped_before_conversion(prior):
    c = make_core(prior, max_people=8, max_points=64)
    msg = Keypoints3DArray()
    for i in range(20):
        msg.people.append(Keypoints3D(person_id=str(i), format=FORMAT, confidences=[1.0] * K))
    msg.people[0].confidences = [1.0] * 100_000  # 100,000 keypoints: never converted
    _, _, _, people = adapters.from_keypoints_array(msg, max_points=64, max_people=8)
    assert people[0].count == 100_000 and people[0].points.size == 0
    assert all(p.points.size == 0 for p in people[8:])
    errors = c.submit(frame(people, 1.0))
    reasons = [e.reason for e in errors]
    assert reasons.count("too_many_people") == 12 and reasons.count("too_many_points") == 1


def test_a_point_cloud_too_big_is_refused_before_parsing():
    from sensor_msgs.msg import PointCloud2

    cloud = PointCloud2(width=10_000, height=100, point_step=16)
    with pytest.raises(core.MalformedInput) as err:
        adapters.check_size(cloud, max_people=64, max_points=512)
    assert err.value.reason == "too_many_points"
    adapters.check_size(PointCloud2(width=17, height=1), max_people=64, max_points=512)


def test_each_cycle_is_bounded_and_tracked_people_go_before_new_ids(prior):
    """200 new people at once, with a tracked person: each cycle refines at most max_batch people and answers them
    at once; the tracked person is answered in the first cycle; then the new ones, oldest first."""
    c = make_core(prior, max_batch=16)
    a = keypoints(6)
    c.submit(frame([core.PersonInput("tracked", a, np.ones(K))], 1.0))
    drain(c)
    crowd = [core.PersonInput(f"new{i}", keypoints(7, transl=(i * 0.1, 0.0, 3.0)), np.ones(K)) for i in range(200)]
    c.submit(frame(crowd, 2.0, frame_id="w"))
    c.submit(frame([core.PersonInput("tracked", a, np.ones(K))], 2.01))
    first = c.refine_pending()
    assert [r.person_id for f in first for r in f.people] == ["tracked"]
    second = c.refine_pending()
    assert [r.person_id for f in second for r in f.people] == [f"new{i}" for i in range(16)]
    assert all(len(c.stats._refine) and b <= 16 for _, _, b in c.stats._refine)


def test_the_checks_median_is_numpys():
    gen = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 17, 133):
        a = gen.normal(size=(n, 3))
        assert np.array_equal(core._median(a), np.median(a, axis=0))
        assert core._median(np.abs(a).reshape(-1)) == np.median(np.abs(a))


def test_a_flood_makes_the_submitter_wait_for_the_worker(prior):
    """A person's pending frame replaced `flood_replaced` times before the worker took it, or more than
    `flood_replaced` x `max_batch` people pending: the submitting thread waits (without the interpreter lock) until the
    worker takes some, or the timeout; counted for /diagnostics."""
    import threading

    c = make_core(prior)
    a = keypoints(9)
    for i in range(core.CoreSettings().flood_replaced):  # the first frame and flood_replaced - 1 replacements
        c.submit(frame([core.PersonInput("p", a, np.ones(K))], 1.0 + 0.01 * i))
        assert not c.yield_to_worker(1.0)
    c.submit(frame([core.PersonInput("p", a, np.ones(K))], 2.0))
    start = time.monotonic()
    assert c.yield_to_worker(0.05) and time.monotonic() - start >= 0.04  # nobody takes it: the timeout
    threading.Timer(0.05, c.refine_pending).start()
    start = time.monotonic()
    assert c.yield_to_worker(30.0) and time.monotonic() - start < 10.0  # the worker took it: at once
    assert not c.yield_to_worker(1.0)  # and the flood is over
    assert c.stats.snapshot()["intake_waits"] == 2
    c = make_core(prior, max_batch=4)  # new ids faster than they are refined: more than flood_replaced batches pending
    crowd = [core.PersonInput(f"new{i}", keypoints(7, transl=(i * 0.1, 0.0, 3.0)), np.ones(K)) for i in range(12)]
    c.submit(frame(crowd, 3.0))
    assert not c.yield_to_worker(1.0)  # 12 = 3 x 4 pending: not more
    c.submit(frame([core.PersonInput("one_more", a, np.ones(K))], 3.1))
    start = time.monotonic()
    assert c.yield_to_worker(0.05) and time.monotonic() - start >= 0.04


def test_the_node_keeps_answering_under_a_flood_of_messages(tmp_path):
    """One person's COCO-17 at FLOOD_HZ from another process (a bag replayed without its clock, a runaway driver):
    the node keeps answering with a short latency. Before the intake waited for the worker it answered once in these
    3 s (checking messages that were only replaced again kept the worker from the interpreter)."""
    import random
    import threading

    import rclpy
    from geometry_msgs.msg import Point
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile

    from dposer_msgs.msg import SmplxPoseArray
    from dposer_ros.ros.process import NodeProcess

    domain = random.randint(120, 229)
    from dposer_ros.ros.refine_node import default_model_path

    # the shipped prior: a solve of its size is what the flood starved (a tiny network's frame has too few operations)
    node = NodeProcess({"model_path": default_model_path(), "latency_budget_ms": 50.0, "compiled_step": False},
                       tmp_path / "node.log", domain)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    client = rclpy.create_node("dposer_flood", context=ctx)
    answers: list[tuple[float, float]] = []  # (stamp, received), monotonic seconds
    client.create_subscription(SmplxPoseArray, "smplx_poses", lambda m: answers.append(
        (m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec, time.monotonic())), QoSProfile(depth=1000))
    pub = client.create_publisher(Keypoints3DArray, "keypoints", QoSProfile(depth=5))
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(client)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    moving = [[Point(x=float(x), y=float(y), z=float(z)) for x, y, z in keypoints(10 + i)] for i in range(30)]
    msg = Keypoints3DArray()
    msg.header.frame_id = "world"
    try:
        end = time.monotonic() + 60.0
        while pub.get_subscription_count() == 0 and time.monotonic() < end and node.alive():
            time.sleep(0.1)
        assert node.alive() and pub.get_subscription_count() > 0, node.log()
        start, sent = time.monotonic(), 0
        while (now := time.monotonic()) - start < 4.0:
            if now - start < sent / FLOOD_HZ:
                time.sleep(start + sent / FLOOD_HZ - now)  # a sensor's pace, not a busy loop's
                continue
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1.0) * 1e9)
            msg.people = [Keypoints3D(person_id="p", format=FORMAT, points=moving[sent % 30], confidences=[1.0] * K)]
            pub.publish(msg)
            sent += 1
        time.sleep(0.5)
        during = [(s, r) for s, r in answers if s >= start + 1.0]  # after the first second (the cold start)
        late = sorted(r - s for s, r in during)
        if sent / 4.0 < 0.8 * FLOOD_HZ:
            pytest.skip(f"this machine published only {sent / 4.0:.0f} messages a second: no flood to test")
        assert len(during) >= 30, f"{len(during)} answers in 3 s of {sent / 4.0:.0f} messages a second\n{node.log()[-2000:]}"
        assert late[len(late) // 2] < 0.5, f"median answer {late[len(late) // 2]:.2f} s late"
    finally:
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown(context=ctx)
        node.stop()


def test_new_ids_are_served_once_they_wait_longer_than_the_head_start(prior):
    c = make_core(prior, max_batch=4, latency_budget_ms=50.0)
    a = keypoints(8)
    c.submit(frame([core.PersonInput("tracked", a, np.ones(K))], 1.0))
    drain(c)
    new = frame([core.PersonInput("late", keypoints(9), np.ones(K))], 1.5)
    new.received -= 0.2  # it has waited 200 ms
    c.submit(new)
    c.submit(frame([core.PersonInput("tracked", a, np.ones(K))], 2.0))
    assert [r.person_id for f in c.refine_pending() for r in f.people] == ["late"]


def test_the_latency_budget_trades_steps_for_time(prior):
    """With a budget already spent, a batch runs one prior step (and says so); without a budget, all steps."""
    c = make_core(prior, latency_budget_ms=20.0, steps=4)
    a = keypoints(10)
    for t in (1.0, 2.0):  # the first warm batch measures the cost per person-step
        c.submit(frame([core.PersonInput("P", a, np.ones(K))], t))
        (res,) = drain(c)
    assert res.refine_steps == 4
    late = frame([core.PersonInput("P", a, np.ones(K))], 3.0)
    late.received -= 0.5  # 500 ms old: over budget
    c.submit(late)
    (res,) = drain(c)
    assert res.refine_steps == 1 and not res.failed
    assert c.stats.snapshot()["degraded_fraction"] > 0
    off = make_core(prior, latency_budget_ms=0.0, steps=4)
    late = frame([core.PersonInput("P", a, np.ones(K))], 3.0)
    late.received -= 0.5
    off.submit(late)
    assert drain(off)[0].refine_steps == 4


def test_one_slow_solver_call_does_not_cost_the_next_batches_their_steps(prior):
    """The cost per person-step that the budget goes by is the median of the last solver calls: one slow call (a
    first call's warm-up, a pause of the machine) leaves the next batches their steps; slow calls that go on count."""
    c = make_core(prior, latency_budget_ms=60.0, steps=4)
    solver, slow = c.solver, [0]

    def pausing(*args, **kwargs):
        if slow[0]:
            slow[0] -= 1
            time.sleep(0.4)  # 100 ms a person-step
        return solver(*args, **kwargs)

    c.solver = pausing
    a = keypoints(12)

    def steps_at(t: float) -> int:
        c.submit(frame([core.PersonInput("P", a, np.ones(K))], t))
        (res,) = drain(c)
        return res.refine_steps

    assert [steps_at(1.0 + i) for i in range(4)][-1] == 4
    slow[0] = 1
    assert steps_at(10.0) == 4  # the slow call itself was planned with the cost before it
    assert steps_at(11.0) == 4  # ... and one slow call does not degrade the next
    slow[0] = 8
    assert [steps_at(20.0 + i) for i in range(8)][-1] == 1  # a machine that stays slow does


def test_a_stream_faster_than_the_refinement_gets_fewer_steps(prior, monkeypatch):
    """Within the latency budget, but frames of the person arrive faster than 4 steps take: the batch runs the steps
    that fit between two frames (the stream is answered frame by frame instead of dropped, latest wins)."""
    clock = [100.0]
    monkeypatch.setattr(core.time, "monotonic", lambda: clock[0])
    c = make_core(prior, latency_budget_ms=1000.0, steps=4)
    a = keypoints(11)

    def step_at(gap: float, t: float) -> int:
        clock[0] += gap
        f = frame([core.PersonInput("P", a, np.ones(K))], t)
        f.received = clock[0]
        c.submit(f)
        c._cost[("coco17", True)] = deque([10.0])  # ms per person and step, as if measured under load
        (res,) = drain(c)
        return res.refine_steps

    assert [step_at(1.0, 1.0 + i) for i in range(3)][-1] == 4  # a frame a second: all 4 steps fit
    assert [step_at(0.025, 5.0 + i) for i in range(30)][-1] == 2  # 40 Hz: 25 ms between frames, 0.8 of it: 2 x 10 ms
    # what a cycle costs beyond the solver (publishing) is measured when the worker says it is done, and comes off
    clock[0] += 0.025
    f = frame([core.PersonInput("P", a, np.ones(K))], 40.0)
    f.received = clock[0]
    c.submit(f)
    c.refine_pending()
    time.sleep(0.5)  # a one-off cost (a new body's URDF) does not count while it is the only one ...
    c.cycle_done()
    assert step_at(0.0, 41.0) == 2
    for i in range(3):  # ... 20 ms of publishing every cycle does
        clock[0] += 0.025
        f = frame([core.PersonInput("P", a, np.ones(K))], 42.0 + i)
        f.received = clock[0]
        c.submit(f)
        c.refine_pending()
        time.sleep(0.02)
        c.cycle_done()
    assert min(c._overhead[("coco17", True)]) >= 15.0
    assert step_at(0.025, 50.0) == 1  # 20 ms of the interval, less the cycle's overhead: 1 step
    off = make_core(prior, latency_budget_ms=0.0, steps=4)
    c = off
    assert [step_at(0.025, 20.0 + i) for i in range(3)][-1] == 4  # no budget: all steps


def test_stale_pending_people_are_dropped(prior):
    c = make_core(prior, person_timeout=0.5)
    old = frame([core.PersonInput("S", keypoints(11), np.ones(K))], 1.0)
    old.received -= 1.0
    c.submit(old)
    assert c.refine_pending() == [] and c.stats.drops == 1 and c.pending == 0


@pytest.mark.parametrize("args, problem", [
    (["-p", "steps:=abc"], "steps must be integer"),
    (["-p", "steps:=2.5"], "steps must be integer"),
    (["--param", "t_max:=high"], "t_max must be double"),
    (["-p", "output_transform:=[0.0, 0.0, 0.0, 0.0, 0.0, .nan, 1.0]"], "finite numbers"),
    (["-p", "steps:=12"], "steps must lie in"),
])
def test_command_line_overrides_of_the_wrong_type_are_refused(args, problem):
    """A parameters file naming the node silently replaced `-p steps:=abc` with its own 4: the node checks."""
    problems = check_command_line(["refine_node", "--ros-args", "--params-file", "x.yaml", *args])
    assert len(problems) == 1 and problem in problems[0]
    assert check_command_line(["refine_node", "--ros-args", "-p", "steps:=2", "-p", "t_max:=1"]) == []


def test_a_nan_output_transform_is_refused():
    spec = BY_NAME["output_transform"]
    assert check_value(spec, [0.0] * 6 + [1.0]) is None
    assert "finite" in check_value(spec, [0.0, float("nan"), 0.0, 0.0, 0.0, 0.0, 1.0])
    assert "quaternion" in check_value(spec, [0.0] * 7)


def test_up_vector_is_checked_and_optical_frames_have_no_up(prior, monkeypatch):
    """The prior is told the input frame's up direction (`up_vector`), except in a camera optical frame (z forward)
    and where it is set to zero; a NaN or short one is refused."""
    spec = BY_NAME["up_vector"]
    assert check_value(spec, [0.0, 0.0, 1.0]) is None and check_value(spec, [0.0, 0.0, 0.0]) is None
    assert "3 finite numbers" in check_value(spec, [0.0, float("nan"), 1.0])
    assert "3 finite numbers" in check_value(spec, [0.0, 1.0])
    seen = []
    original = FewStepRefiner.__call__

    def spy(self, obs, init=None):
        seen.append(None if obs.up is None else obs.up.tolist())
        return original(self, obs, init)

    monkeypatch.setattr(FewStepRefiner, "__call__", spy)
    pts = keypoints(4)
    for frame_id, up, expected in (("base_link", (0.0, 0.0, 1.0), [0.0, 0.0, 1.0]),
                                   ("camera_color_optical_frame", (0.0, 0.0, 1.0), [0.0, 0.0, 0.0]),
                                   ("world", (0.0, 2.0, 0.0), [0.0, 1.0, 0.0]), ("world", (0.0, 0.0, 0.0), [0.0, 0.0, 0.0])):
        c = make_core(prior, up_vector=up)
        c.submit(frame([core.PersonInput("U", pts, np.ones(K))], 1.0, frame_id))
        assert_sane(drain(c), pts)
        assert seen[-1] == [expected]
    # the diagnostics' check of up_vector: these bodies stand along y (SMPL-X's up), so z up is across them
    for up, upright in (((0.0, 1.0, 0.0), True), ((0.0, 0.0, 1.0), False)):
        c = make_core(prior, up_vector=up)
        c.submit(frame([core.PersonInput("U", pts, np.ones(K))], 1.0, "world"))
        drain(c)
        snap = c.stats.snapshot()
        assert snap["torso_up_count"] == 1 and (snap["torso_up_median"] > 0.9) == upright


def test_floor_height_reaches_the_solver_where_the_up_direction_is_known(prior, monkeypatch):
    """`floor_height` (NaN: unknown) is the floor of every input frame with an up direction; an optical frame has
    neither; an infinite one is refused."""
    spec = BY_NAME["floor_height"]
    assert check_value(spec, 0.0) is None and check_value(spec, float("nan")) is None
    assert "finite height" in check_value(spec, float("inf"))
    seen = []
    original = FewStepRefiner.__call__

    def spy(self, obs, init=None):
        seen.append(None if obs.floor is None else obs.floor.tolist())
        return original(self, obs, init)

    monkeypatch.setattr(FewStepRefiner, "__call__", spy)
    pts = keypoints(4)
    for frame_id, floor, expected in (("base_link", 0.0, 0.0), ("base_link", -1.2, -1.2), ("base_link", math.nan, None),
                                      ("camera_color_optical_frame", 0.0, None)):
        c = make_core(prior, floor_height=floor)
        c.submit(frame([core.PersonInput("U", pts, np.ones(K))], 1.0, frame_id))
        assert_sane(drain(c), pts)
        assert seen[-1][0] == pytest.approx(expected) if expected is not None else math.isnan(seen[-1][0])


def test_keypoint_noise_reaches_the_solver_and_tracks_keep_their_filter(prior, monkeypatch):
    """`keypoint_noise_cm` (NaN: unknown, the default) is told to the solver in metres, and a track carries its
    keypoints' filter to its next frame; a negative or infinite noise is refused."""
    spec = BY_NAME["keypoint_noise_cm"]
    assert check_value(spec, 2.0) is None and check_value(spec, float("nan")) is None
    for bad in (-1.0, float("inf"), 1e30):
        assert "non-negative" in check_value(spec, bad)
    seen = []
    original = FewStepRefiner.__call__

    def spy(self, obs, init=None):
        seen.append((None if obs.noise is None else obs.noise.tolist(), init is not None and init.keypoint_filter is not None))
        return original(self, obs, init)

    monkeypatch.setattr(FewStepRefiner, "__call__", spy)
    pts = keypoints(4)
    for noise, told in ((math.nan, None), (2.0, 0.02)):
        c = make_core(prior, keypoint_noise_cm=noise)
        for stamp in (1.0, 1.1):
            c.submit(frame([core.PersonInput("U", pts, np.ones(K))], stamp, "base_link"))
            assert_sane(drain(c), pts)
        assert seen[-1][0] == (None if told is None else pytest.approx([told]))
        assert seen[-1][1] == (told is not None)  # the second frame's warm start holds the filter


def test_a_track_remembers_its_keypoints_between_messages(prior, monkeypatch):
    """The node's tracks carry the keypoint memory (`keypoint_hold_weight`): a keypoint hidden in the next message
    is held where the track last saw it; with the weight 0 nothing is remembered."""
    seen = []
    original = FewStepRefiner.__call__

    def spy(self, obs, init=None):
        seen.append(None if init is None or init.keypoint_memory is None else init.keypoint_memory[0].clone())
        return original(self, obs, init)

    monkeypatch.setattr(FewStepRefiner, "__call__", spy)
    pts = keypoints(5)
    hidden = np.ones(K)
    hidden[3] = 0.0
    for weight, remembered in ((0.2, True), (0.0, False)):
        c = make_core(prior, keypoint_hold_weight=weight, hand_keypoint_hold_weight=weight)
        c.submit(frame([core.PersonInput("M", pts, np.ones(K))], 1.0))
        drain(c)
        c.submit(frame([core.PersonInput("M", pts + 0.05, hidden)], 1.1))
        assert_sane(drain(c), pts)
        if remembered:
            assert np.allclose(seen[-1][3].numpy(), pts[3], atol=1e-6)
        else:
            assert seen[-1] is None


def test_the_time_between_a_tracks_frames_reaches_the_solver(prior, monkeypatch):
    """The interval from a track's last answered frame to the next, by the messages' stamps, is the solver's
    `Observation.interval` (its holds fade with time); a new track, an untracked person or a stamp that does not
    advance: unknown (NaN)."""
    seen = []
    original = FewStepRefiner.__call__

    def spy(self, obs, init=None):
        seen.append(obs.interval.tolist())
        return original(self, obs, init)

    monkeypatch.setattr(FewStepRefiner, "__call__", spy)
    pts = keypoints(6)
    for person_id in ("T", ""):
        c = make_core(prior)
        for t in (1.0, 1.1, 1.1, 1.4):
            c.submit(frame([core.PersonInput(person_id, pts, np.ones(K))], t))
            drain(c)
    tracked, untracked = [v[0] for v in seen[:4]], [v[0] for v in seen[4:]]
    assert math.isnan(tracked[0]) and tracked[1] == pytest.approx(0.1, abs=1e-6)
    assert math.isnan(tracked[2]) and tracked[3] == pytest.approx(0.3, abs=1e-6)
    assert len(untracked) == 4 and all(math.isnan(v) for v in untracked)


def test_diagnostics_measure_how_far_seen_feet_stand_off_the_floor(prior):
    """`floor_gap_median_m`: the lower foot of answers whose feet are seen, above floor_height (what /diagnostics
    warns about when a wrong floor is set); answers with hidden feet, or without a floor, do not count."""
    pts = keypoints(4)
    ankles = [get_format(FORMAT).keypoint_names.index(n) for n in ("left_ankle", "right_ankle")]

    def gap(floor: float, conf: np.ndarray = np.ones(K), frame_id: str = "world") -> tuple[float, int]:
        c = make_core(prior, up_vector=(0.0, 1.0, 0.0), floor_height=floor)
        c.submit(frame([core.PersonInput("U", pts, conf)], 1.0, frame_id))
        drain(c)
        snap = c.stats.snapshot()
        return snap["floor_gap_median_m"], snap["floor_gap_count"]

    height, count = gap(0.0)  # the bodies stand along y: their feet's height in the frame
    assert count == 1 and -1.5 < height < -0.5
    assert gap(height)[0] == pytest.approx(0.0, abs=1e-4)
    assert gap(height - 1.0)[0] == pytest.approx(1.0, abs=1e-4)
    hidden = np.ones(K)
    hidden[ankles] = 0.0
    assert gap(0.0, hidden)[1] == 0
    assert gap(math.nan)[1] == 0 and gap(0.0, frame_id="camera_optical_frame")[1] == 0


def test_the_library_ignores_missing_keypoints_whatever_they_hold(prior):
    """`FewStepRefiner` called directly: Inf at confidence 0 and a coordinate float32 cannot hold (1e39) are no
    observations (inf x 0 made NaN residuals); the answer is the one without them."""
    from dposer_ros.solvers.refine import FewStepRefiner
    from dposer_ros.solvers.types import Observation

    fmt = get_format(FORMAT)
    refiner = FewStepRefiner(prior, fmt)
    pts = torch.tensor(keypoints(12), dtype=torch.float64)[None]
    conf = torch.ones(1, K)
    conf[0, 3] = 0.0
    bad = pts.clone()
    bad[0, 3] = float("inf")
    bad[0, 4, 2] = 1e39
    conf4 = conf.clone()
    res = refiner(Observation(bad, conf4, fmt))
    assert torch.isfinite(res.joints).all() and torch.isfinite(res.transl).all()
    without4 = conf.clone()
    without4[0, 4] = 0.0
    ref = refiner(Observation(pts.clone(), without4, fmt))
    assert torch.allclose(res.joints, ref.joints, atol=1e-5)


# ----------------------------------------------------------------------------------------------- the node process


@pytest.fixture(scope="module")
def prior_file(prior, tmp_path_factory):
    path = tmp_path_factory.mktemp("reliability") / "tiny_prior.pt"
    prior.save(path)
    return path


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_the_node_exits_cleanly_on_a_signal_under_load(tmp_path, prior_file, sig):
    """SIGINT / SIGTERM while refining big messages: exit code 0 within 2 s and no error line (SIGABRT and
    'publishing failed: context is invalid' before). bench/shutdown.py runs 20 trials of each."""
    import random
    import signal

    from dposer_ros.ros.process import stop_under_load

    code, seconds, log = stop_under_load({"model_path": prior_file, "backend": "torch", "max_people": 1000},
                                         getattr(signal, sig), tmp_path / "node.log", random.randint(120, 229),
                                         keypoints(0), FORMAT)
    assert code == 0, log[-3000:]
    assert seconds < 2.0, f"took {seconds:.1f} s"
    bad = [line for line in log.splitlines() if "ERROR" in line or "Traceback" in line or "terminate" in line]
    assert bad == [], "\n".join(bad)
