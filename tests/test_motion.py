"""The motion model of hidden legs: the track's time-stamped history, the model file, and the refiner's use of it
(a walker's hidden legs follow the motion; a person standing still is answered as without it)."""

from dataclasses import fields
from pathlib import Path

import pytest
import roma
import torch

from dposer_ros.body import ForwardKinematics
from dposer_ros.keypoints import get_format
from dposer_ros.prior.model import PosePrior
from dposer_ros.prior.motion import LEGS, LegMotion, MotionError, MotionNet
from dposer_ros.solvers.history import History, at_lags, capacity
from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings
from dposer_ros.solvers.types import BodyState, Observation

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "dposer_cpu"
MOCAP = ROOT.parent / "shared" / "data" / "mocap"
LAGS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)


def _walk(history: History, frames: int, rate: float, speed: float = 1.2,
          direction: tuple[float, float, float] = (1.0, 0.0, 0.0), jitter: float = 0.0) -> History:
    """`frames` answers of a root moving along `direction` at `speed` m/s (plus `jitter` m of noise), its pelvis
    turning 0.1 rad/s, at `rate` Hz."""
    gen = torch.Generator().manual_seed(0)
    for i in range(frames):
        history = history.aged(torch.full((1,), 1.0 / rate))
        pose = torch.zeros(1, 55, 3)
        pose[0, 0, 1] = 0.1 * i / rate
        where = torch.tensor([[0.0, 0.9, 0.0]]) + speed * i / rate * torch.tensor([direction])
        history = history.remember(roma.rotvec_to_rotmat(pose), where + jitter * torch.randn(1, 3, generator=gen), 1.0 / 30)
    return history.aged(torch.full((1,), 1.0 / rate))  # the next frame's time


@pytest.mark.parametrize("rate", [30.0, 60.0, 15.0])
def test_lags_are_read_by_time_whatever_the_rate(rate):
    tolerance = 0.05
    history = _walk(History.empty(1, capacity(LAGS, 30.0)), int(2 * rate), rate)
    lagged = at_lags(history, torch.tensor(LAGS), tolerance)
    assert lagged.available.all()
    assert torch.allclose(lagged.velocity[0], torch.tensor([1.2, 0.0, 0.0]).expand(len(LAGS), 3), atol=1e-4)
    turned = roma.rotmat_to_rotvec(lagged.past[0, :, 0])[:, 1]  # the pelvis's heading at each lag
    now = 0.1 * (2 * rate) / rate
    assert torch.allclose(turned, now - 0.1 * torch.tensor(LAGS), atol=0.1 * tolerance + 1e-4)
    # a young track reaches only its first lags (a prefix)
    young = at_lags(_walk(History.empty(1, capacity(LAGS, 30.0)), int(0.35 * rate), rate), torch.tensor(LAGS),
                    tolerance)
    assert young.available[0].tolist() == [True, True, True, False, False, False, False]
    assert (young.velocity[0, 3:] == 0).all()


def test_a_history_holds_a_second_at_any_rate_and_travels_with_the_track():
    history = _walk(History.empty(1, capacity(LAGS, 30.0)), 120, 60.0)  # 60 Hz: every second answer is kept
    ages = history.age[0][torch.isfinite(history.age[0])]
    assert ages.max() >= 1.0 + 1 / 30 and torch.allclose(ages.diff(), torch.tensor(1 / 30), atol=1e-4)
    two = BodyState.cat([BodyState(torch.zeros(1, 55, 3), torch.zeros(1, 3), history=history),
                         BodyState(torch.ones(1, 55, 3), torch.ones(1, 3), history=History.empty(1, history.age.shape[1]))])
    assert two.history is not None and two.history.age.shape == (2, history.age.shape[1])
    assert torch.equal(two.select(0).history.transl, history.transl)
    assert BodyState.cat([two.select(0), BodyState(torch.zeros(1, 55, 3), torch.zeros(1, 3))]).history is None


@pytest.mark.parametrize("speed, direction, jitter, settings, remembered, moving", [
    (1.2, (1.0, 0.0, 0.0), 0.0, {}, True, True),  # a walk, legs seen before or not
    (0.4, (0.0, -1.0, 0.0), 0.0, {}, False, True),  # a squat going down, legs never seen
    (0.4, (0.0, -1.0, 0.0), 0.0, {}, True, False),  # ... its legs seen a moment ago: the held feet stand better
    (0.4, (0.0, -1.0, 0.0), 0.0, {"motion_min_vertical_speed": 1e9}, False, False),  # the vertical gate shut
    (0.0, (1.0, 0.0, 0.0), 0.005, {}, False, False),  # someone standing, answered with 5 mm of jitter
    (1.2, (1.0, 0.0, 0.0), 0.0, {"motion_legs": False}, False, None),  # no model asked
])
def test_the_motion_model_acts_on_people_who_move(speed, direction, jitter, settings, remembered, moving):
    from dposer_ros.prior.layout import DIM
    from dposer_ros.prior.model import Normalizer
    from dposer_ros.prior.network import ScoreNet
    from dposer_ros.prior.sde import SubVPSDE

    prior = PosePrior(ScoreNet(hidden=32, blocks=1, time_dim=16, groups=8), SubVPSDE(),
                      Normalizer(torch.zeros(DIM), torch.ones(DIM))).eval()
    motion = LegMotion(MotionNet(len(LAGS), hidden=16), LAGS, 30.0)
    refiner = FewStepRefiner(prior, get_format("h36m17"), RefineSettings(**settings), motion=motion)
    if moving is None:
        assert refiner.motion is None and refiner._history(None, torch.ones(1)) is None
        return
    history = _walk(History.empty(1, capacity(LAGS, 30.0)), 40, 30.0, speed, direction, jitter)
    answer = refiner._motion_input(history, torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([remembered]))
    assert (answer is not None and bool(answer["moving"].all())) == moving


def test_the_legs_a_track_remembers_are_its_seen_leg_keypoints():
    from dposer_ros.prior.layout import DIM
    from dposer_ros.prior.model import Normalizer
    from dposer_ros.prior.network import ScoreNet
    from dposer_ros.prior.sde import SubVPSDE

    prior = PosePrior(ScoreNet(hidden=32, blocks=1, time_dim=16, groups=8), SubVPSDE(),
                      Normalizer(torch.zeros(DIM), torch.ones(DIM))).eval()
    fmt = get_format("h36m17")
    refiner = FewStepRefiner(prior, fmt, RefineSettings(), motion=LegMotion(MotionNet(len(LAGS), hidden=16), LAGS, 30.0))
    assert [fmt.keypoint_names[k] for k in refiner.leg_keypoints] == ["right_knee", "right_ankle", "left_knee", "left_ankle"]
    memory = torch.full((3, fmt.num_keypoints, 3), float("nan"))
    memory[1:, fmt.keypoint_names.index("left_ankle")] = 0.0  # people 1 and 2 saw an ankle, 2 of them long ago
    age = torch.tensor([0.0, 3.0, 60.0])[:, None].expand(3, fmt.num_keypoints)
    state = BodyState(torch.zeros(3, 55, 3), torch.zeros(3, 3), keypoint_memory=memory, keypoint_age=age)
    assert refiner._legs_remembered(state).tolist() == [False, True, False]


def test_a_batch_splits_into_the_states_select_gives_each_person():
    """`BodyState.split` (the node's per-cycle track update) holds what `select(i)` holds, history and calibration
    included, as copies."""
    from dposer_ros.prior.layout import DIM
    from dposer_ros.prior.model import Normalizer
    from dposer_ros.prior.network import ScoreNet
    from dposer_ros.prior.sde import SubVPSDE

    torch.manual_seed(0)
    prior = PosePrior(ScoreNet(hidden=32, blocks=1, time_dim=16, groups=8), SubVPSDE(),
                      Normalizer(torch.zeros(DIM), torch.ones(DIM))).eval()
    fmt = get_format("h36m17")
    refiner = FewStepRefiner(prior, fmt, RefineSettings(), motion=LegMotion(MotionNet(len(LAGS), hidden=16), LAGS, 30.0))
    pose = 0.2 * torch.randn(3, 55, 3)
    points = fmt.from_posed(ForwardKinematics()(pose, torch.tensor([[0.0, 0.0, 3.0]] * 3))).float()
    conf = torch.ones(points.shape[:2])
    conf[0, 3] = 0.0  # a hidden keypoint: a memory with NaN rows
    state = None
    for _ in range(3):
        state = refiner(Observation(points, conf, fmt, interval=torch.tensor(1 / 30)), state)
    assert state.history is not None and state.calibration is not None and state.keypoint_memory is not None
    parts = state.split()
    for i, part in enumerate(parts):
        one = state.select(i)
        for name in BodyState._PER_PERSON:
            torch.testing.assert_close(getattr(part, name), getattr(one, name), rtol=0, atol=0, equal_nan=True)
        for a, b in ((part.history, one.history), (part.calibration, one.calibration)):
            for f in fields(a):
                assert torch.equal(getattr(a, f.name), getattr(b, f.name)), f.name
    pose, rotation = state.pose.clone(), state.history.rotation.clone()
    parts[0].pose += 1.0
    parts[0].history.rotation.zero_()
    assert torch.equal(state.pose, pose) and torch.equal(state.history.rotation, rotation)  # copies, not the batch


def test_settings_of_the_wrong_type_are_refused():
    for bad in ({"motion_min_vertical_speed": "1.0e9"}, {"steps": 4.0}, {"motion_legs": 1}, {"prior_weight": True}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be a"):
            RefineSettings(**bad)
    assert RefineSettings(prior_weight=3).prior_weight == 3  # an int for a float is a number


def test_motion_file_round_trip_and_bad_files(tmp_path):
    model = LegMotion(MotionNet(len(LAGS), hidden=16), LAGS, 30.0, {"note": "test"})
    model.save(tmp_path / "motion.pt")
    loaded = LegMotion.load(tmp_path / "motion.pt")
    assert loaded.lags == LAGS and loaded.fps == 30.0 and loaded.meta == {"note": "test"}
    args = (roma.random_rotmat(2 * 22).reshape(2, 22, 3, 3), roma.random_rotmat(2 * 7 * 22).reshape(2, 7, 22, 3, 3),
            torch.randn(2, 7, 3), torch.ones(2, 7, dtype=torch.bool), torch.tensor([[0.0, 1.0, 0.0]] * 2))
    assert torch.equal(loaded(*args), model(*args)) and model(*args).shape == (2, len(LEGS), 3)
    with pytest.raises(MotionError, match="not found.*dposer motion"):
        LegMotion.load(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MotionError, match="not a readable"):
        LegMotion.load(tmp_path / "garbage.pt")
    payload = torch.load(tmp_path / "motion.pt", weights_only=True)
    torch.save({**payload, "lags": [0.5, 0.1, 0.2, 0.3, 0.4, 0.7, 1.0]}, tmp_path / "unsorted.pt")
    with pytest.raises(MotionError, match="increasing"):
        LegMotion.load(tmp_path / "unsorted.pt")
    torch.save({**payload, "format": "dposer_ros.completion/1"}, tmp_path / "other.pt")
    with pytest.raises(MotionError, match="not a motion model"):
        LegMotion.load(tmp_path / "other.pt")


def test_the_motion_cli_says_what_is_wrong(tmp_path, capsys):
    from dposer_ros.cli import main

    (tmp_path / "bad.yaml").write_text("steps: 10\nwings: 2\n")
    assert main(["motion", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "m.pt")]) == 2
    assert "unknown motion training settings ['wings']" in capsys.readouterr().err
    assert main(["motion", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "m.pt")]) == 2
    assert "none.yaml" in capsys.readouterr().err and not (tmp_path / "m.pt").exists()


needs_shipped = pytest.mark.skipif(not (SHIPPED / "motion.pt").is_file() or not MOCAP.is_dir(),
                                   reason="needs the shipped prior and motion model and shared/data/mocap")


def _hidden_leg_error(motion, clip_take: str, legs_seen: bool = False) -> tuple[float, list]:
    """Mean error (mm) of the hidden leg keypoints over the second half of a validation walk, legs hidden."""
    from dposer_ros.evaluation import load_corruptions
    from dposer_ros.evaluation.foreign import _rest_joints, foreign_clips
    from dposer_ros.evaluation.runner import run_stream, stream_seed
    from dposer_ros.paths import config_path

    cor = load_corruptions(config_path("eval/corruptions_foreign.yaml"))["cam_occl_legs"]
    clip = foreign_clips(MOCAP, 1, 40, "val", 0, ("h36m17",), takes=(clip_take,))[0]
    truth = clip.keypoint_truth(cor.format)
    data = cor.apply_keypoints(truth, stream_seed(0, cor.name, clip.name))
    refiner = FewStepRefiner(PosePrior.load(SHIPPED / "prior.pt"), cor.format, RefineSettings(), motion=motion)
    outs, _ = run_stream(refiner, cor.format, data, clip.up, clip.floor, cor.fps)
    fk = ForwardKinematics()
    posed = fk(torch.cat([o.pose for o in outs]).double(), torch.cat([o.transl for o in outs]).double(),
               _rest_joints(outs, fk))
    hidden = ~data.visible & torch.isfinite(truth[data.frames]).all(-1)
    hidden[:20] = False
    error = (cor.format.from_posed(posed) - truth[data.frames].double()).norm(dim=-1)[hidden].mean()
    return float(error) * 1000, outs


@needs_shipped
def test_hidden_legs_of_a_walker_follow_the_motion():
    motion = LegMotion.load(SHIPPED / "motion.pt")
    without, _ = _hidden_leg_error(None, "07_08")
    with_motion, outs = _hidden_leg_error(motion, "07_08")
    assert outs[-1].history is not None and bool(torch.isfinite(outs[-1].history.age).all())
    assert with_motion < 0.85 * without, (with_motion, without)


@needs_shipped
def test_a_person_standing_still_is_answered_as_without_the_motion_model():
    fmt = get_format("h36m17")
    prior = PosePrior.load(SHIPPED / "prior.pt")
    pose = torch.zeros(1, 55, 3)
    kp = fmt.from_posed(ForwardKinematics()(pose, torch.tensor([[0.0, 0.95, 0.0]]))).float()
    conf = torch.ones(kp.shape[:2])
    for name in ("left_knee", "right_knee", "left_ankle", "right_ankle"):
        conf[0, fmt.keypoint_names.index(name)] = 0.0
    answers = []
    for motion in (None, LegMotion.load(SHIPPED / "motion.pt")):
        refiner, state = FewStepRefiner(prior, fmt, RefineSettings(), motion=motion), None
        for i in range(45):
            obs = Observation(kp + 0.003 * torch.randn(kp.shape, generator=torch.Generator().manual_seed(i)), conf,
                              fmt, up=torch.tensor([0.0, 1.0, 0.0]), floor=torch.tensor(0.0),
                              interval=torch.tensor(1 / 30))
            state = refiner(obs, state)
        answers.append(state.pose)
    assert torch.equal(answers[0], answers[1])
