"""The evaluation harness: metrics on hand-made cases, corruption models, clip selection, the streaming runner, the CLI.

Everything is built from `smplx_neutral` forward kinematics of hand-made poses, so no dataset is needed; one test
on the real dataset skips when the file is absent.
"""

import json
import math

import numpy as np
import pytest
import roma
import torch

from dposer_ros.body import NUM_JOINTS, ForwardKinematics, smplx_neutral
from dposer_ros.cli import main
from dposer_ros.dataset.poses import PoseDataset, default_dataset_path, load_dataset, save_dataset
from dposer_ros.evaluation import compare
from dposer_ros.evaluation.clips import Clip, select_clips
from dposer_ros.evaluation.methods import METHODS, MethodError, build_methods
from dposer_ros.evaluation.metrics import (
    BODY_JOINTS,
    accel_error,
    hand_mpjpe,
    joint_visibility,
    latency_ms,
    mpjpe,
    pa_mpjpe,
)
from dposer_ros.evaluation.report import write_report
from dposer_ros.evaluation.runner import evaluate, stream_seed
from dposer_ros.keypoints import get_format
from dposer_ros.paths import default_mocap_dir
from dposer_ros.sensors.corruptions import (
    Corruption,
    CorruptionError,
    Occlusion,
    joint_set,
    load_corruptions,
    resolve_format,
)
from dposer_ros.solvers.types import Refined

FK = ForwardKinematics()
SKEL = smplx_neutral()
LIMBS = {
    "left_arm": joint_set(["left_collar", "left_shoulder", "left_elbow", "left_wrist", "left_hand"]),
    "right_arm": joint_set(["right_collar", "right_shoulder", "right_elbow", "right_wrist", "right_hand"]),
    "left_leg": joint_set(["left_hip", "left_knee", "left_ankle", "left_foot"]),
    "right_leg": joint_set(["right_hip", "right_knee", "right_ankle", "right_foot"]),
    "left_hand": joint_set(["left_wrist", "left_hand"]),
    "right_hand": joint_set(["right_wrist", "right_hand"]),
}


def hand_made_poses(frames: int, phase: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeros plus small smooth rotations (elbows, knees, spine, fingers) and a slow walk forward."""
    t = torch.arange(frames, dtype=torch.float64) / 30.0 + phase
    pose = torch.zeros(frames, NUM_JOINTS, 3, dtype=torch.float64)
    pose[:, SKEL.index("left_elbow"), 1] = 0.4 + 0.3 * torch.sin(2 * t)
    pose[:, SKEL.index("right_elbow"), 1] = -0.5 + 0.2 * torch.cos(3 * t)
    pose[:, SKEL.index("left_knee"), 0] = 0.3 + 0.3 * torch.sin(4 * t)
    pose[:, SKEL.index("right_knee"), 0] = 0.2 + 0.2 * torch.cos(4 * t)
    pose[:, SKEL.index("spine1"), 0] = 0.1 * torch.sin(t)
    pose[:, 0, 1] = 0.2 * t
    pose[:, 25:55, 2] = 0.3 + 0.2 * torch.sin(5 * t)[:, None]  # finger curl
    transl = torch.stack([0.1 * t, 0.9 + 0 * t, 1.2 * t], dim=-1)
    return pose, transl


def make_clip(name: str, frames: int = 12, kind: str = "body", phase: float = 0.0) -> Clip:
    pose, transl = hand_made_poses(frames, phase)
    mask = torch.tensor([True, False, False, False]) if kind == "body" else torch.tensor([False, True, True, False])
    return Clip(name, kind, "handmade", name, 0, pose.float(), transl.float(), mask.repeat(frames, 1))


def refined(joints: torch.Tensor, pose: torch.Tensor | None = None) -> Refined:
    b = joints.shape[0]
    return Refined(torch.zeros(b, NUM_JOINTS, 3) if pose is None else pose, torch.zeros(b, 3), joints.float(),
                   torch.ones(b, 4, dtype=torch.bool), torch.zeros(b, 4, dtype=torch.bool))


def where(mask: torch.Tensor) -> set[int]:
    return set(torch.nonzero(mask).flatten().tolist())


def keypoints_only(fmt):
    """The smplx55 observation itself as the answer (missing points at 0)."""
    assert fmt.name == "smplx55"
    return lambda obs, init: refined(obs.points)


# ---------------------------------------------------------------- metrics


def test_mpjpe_of_a_known_offset():
    gt = FK(hand_made_poses(5)[0]).joints
    pred = gt + torch.tensor([0.03, 0.04, 0.0], dtype=torch.float64)
    assert mpjpe(pred, gt) == pytest.approx(50.0)
    mask = torch.zeros(5, NUM_JOINTS, dtype=torch.bool)
    mask[:, 3] = True
    pred[:, 3] += torch.tensor([0.0, 0.0, 0.12], dtype=torch.float64)  # now (3, 4, 12) cm -> 130 mm
    assert mpjpe(pred, gt, mask) == pytest.approx(130.0)
    assert math.isnan(mpjpe(pred, gt, torch.zeros_like(mask)))


def test_pa_mpjpe_is_invariant_to_similarity_transforms():
    gt = FK(*hand_made_poses(4)).joints
    gen = torch.Generator().manual_seed(0)
    rot = roma.rotvec_to_rotmat(torch.tensor([0.3, -1.2, 0.7], dtype=torch.float64))
    moved = 1.3 * gt @ rot.T + torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    assert pa_mpjpe(moved, gt) < 1e-6
    assert mpjpe(moved, gt) > 100.0
    noisy = gt + 0.02 * torch.randn(gt.shape, generator=gen, dtype=torch.float64)
    base = pa_mpjpe(noisy, gt)
    assert 5.0 < base < mpjpe(noisy, gt)
    assert pa_mpjpe(0.7 * noisy @ rot + 1.0, gt) == pytest.approx(base, rel=1e-6)
    # a reflection is not a rotation: mirrored bodies stay wrong
    assert pa_mpjpe(gt * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64), gt) > 10.0


def test_acceleration_error():
    gt = FK(*hand_made_poses(20)).joints
    t = torch.arange(20, dtype=torch.float64)[:, None, None]
    assert accel_error(gt + 0.01 * t * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), gt) < 1e-9
    # x(t) = a t^2 / 2 has second difference a: 2 mm/frame^2
    assert accel_error(gt + 0.5 * 0.002 * t**2 * torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), gt) == pytest.approx(2.0)
    # at stride 3 the same motion sampled every 3rd frame still reads 2 mm per (30 Hz frame)^2
    sub = (gt + 0.5 * 0.002 * t**2 * torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))[::3]
    assert accel_error(sub, gt[::3], stride=3) == pytest.approx(2.0)


def test_hand_mpjpe_is_wrist_relative():
    gt = FK(*hand_made_poses(3)).joints
    assert hand_mpjpe(gt + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), gt) < 1e-9
    pred = gt.clone()
    pred[:, 25:40] += torch.tensor([0.0, 0.01, 0.0], dtype=torch.float64)  # left fingers 1 cm off
    assert hand_mpjpe(pred, gt) == pytest.approx(5.0)  # half of the 30 joints
    pred = gt.clone()
    pred[:, 20] += 0.01  # moving only the wrist moves every left finger relative to it
    assert hand_mpjpe(pred, gt) == pytest.approx(0.5 * math.sqrt(3) * 10.0)


def test_latency_percentiles():
    lat = latency_ms([0.001] * 99 + [0.1])
    assert lat["p50"] == pytest.approx(1.0) and lat["p99"] > 1.0 and lat["mean"] == pytest.approx(1.99)


def test_joint_visibility_rules():
    smplx = get_format("smplx55")
    vis = torch.ones(2, 55, dtype=torch.bool)
    vis[0, [4, 18, 30]] = False
    np.testing.assert_array_equal(joint_visibility(smplx, vis).numpy(), vis.numpy())  # own visibility

    coco = get_format("coco17")
    vis = torch.ones(1, 17, dtype=torch.bool)
    vis[0, [coco.index(n) for n in ("left_hip", "left_knee", "left_ankle")]] = False
    joints = joint_visibility(coco, vis)[0]
    assert where(~joints) == {1, 4, 7, 10}  # the foot follows the ankle
    vis = torch.ones(1, 17, dtype=torch.bool)
    vis[0, [coco.index(n) for n in ("left_shoulder", "left_elbow", "left_wrist")]] = False
    assert where(~joint_visibility(coco, vis)[0]) == {13, 16, 18, 20, *range(25, 40)}
    vis = torch.ones(1, 17, dtype=torch.bool)
    vis[0, :5] = False  # the face: head, eyes, and the trunk joints above nothing else
    hidden = where(~joint_visibility(coco, vis)[0])
    assert hidden == {0, 3, 6, 9, 12, 15, 22, 23, 24}
    vis = torch.ones(1, 17, dtype=torch.bool)
    vis[0, coco.index("left_elbow")] = False  # a joint with its own keypoint follows only it
    assert where(~joint_visibility(coco, vis)[0]) == {18}


# ---------------------------------------------------------------- corruptions


def posed_clip(frames: int = 12):
    return FK(*hand_made_poses(frames))


def test_corruption_is_deterministic_for_a_seed():
    cor = Corruption("c", "coco17", noise_cm=(2.0, 6.0), occlusion=Occlusion("random", fraction=0.3),
                     keypoint_dropout=0.1, frame_dropout=0.2)
    posed = posed_clip()
    a, b, c = cor.apply(posed, 7), cor.apply(posed, torch.Generator().manual_seed(7)), cor.apply(posed, 8)
    for x, y in zip(a, b):
        assert torch.equal(x.nan_to_num(123.0), y.nan_to_num(123.0))
    assert a.sigma_cm == b.sigma_cm
    assert not torch.equal(a.visible, c.visible)


def test_noise_level_and_confidence_model():
    cor = Corruption("c", "smplx55", noise_cm=(4.0, 4.0), confidence_scale_cm=5.0)
    posed = posed_clip(200)
    points, conf, visible, frames = cor.apply(posed, 0)
    truth = get_format("smplx55").from_posed(posed)
    noise = points.double() - truth
    assert visible.all() and torch.equal(frames, torch.arange(200))
    assert float(noise.std()) == pytest.approx(0.04, rel=0.03)
    err_cm = noise.norm(dim=-1) * 100
    expected = 0.5 + 0.5 * torch.exp(-((err_cm / 5.0) ** 2))
    assert torch.allclose(conf.double(), expected, atol=1e-5)
    assert conf.min() >= 0.5 and conf.max() <= 1.0


@pytest.mark.parametrize("fmt", ["coco17", "smplx55"])
def test_one_limb_occlusion_hides_exactly_one_limb_per_clip(fmt):
    occ = Occlusion("limb", tuple((n, LIMBS[n]) for n in ("left_arm", "right_arm", "left_leg", "right_leg")))
    cor = Corruption("limb", fmt, noise_cm=(2.0, 2.0), occlusion=occ)
    f = get_format(fmt)
    drawn = set()
    for seed in range(16):
        points, conf, visible, _ = cor.apply(posed_clip(6), seed)
        out = cor.apply(posed_clip(6), seed)
        drawn.add(out.limb)
        expected = torch.as_tensor(np.isin(f.joints, LIMBS[out.limb]))
        assert torch.equal(~visible, expected.expand_as(visible))  # the same keypoints in every frame
        assert torch.isnan(points[~visible]).all() and torch.isfinite(points[visible]).all()
        assert (conf[~visible] == 0).all() and (conf[visible] >= 0.5).all()
    assert drawn == {"left_arm", "right_arm", "left_leg", "right_leg"}
    if fmt == "coco17":
        hidden = {f.keypoint_names[k] for k in np.flatnonzero(np.isin(f.joints, LIMBS["left_leg"]))}
        assert hidden == {"left_hip", "left_knee", "left_ankle"}


def test_legs_and_hands_occlusions():
    legs = Corruption("legs", "smplx55", occlusion=Occlusion("parts", (("l", LIMBS["left_leg"]), ("r", LIMBS["right_leg"]))))
    _, _, visible, _ = legs.apply(posed_clip(4), 0)
    assert where(~visible[0]) == {1, 2, 4, 5, 7, 8, 10, 11}
    hands = Occlusion("parts", (("l", LIMBS["left_hand"]), ("r", LIMBS["right_hand"])))
    _, _, visible, _ = Corruption("hands", "smplx55", occlusion=hands).apply(posed_clip(4), 0)
    assert where(~visible[0]) == {20, 21, *range(25, 55)}
    _, _, visible, _ = Corruption("hands", "coco_wholebody133", occlusion=hands).apply(posed_clip(4), 0)
    wb = get_format("coco_wholebody133")
    names = {wb.keypoint_names[k] for k in sorted(where(~visible[0]))}
    assert names == {"left_wrist", "right_wrist", *wb.keypoint_names[91:133]}  # the body wrists + 2 x 21 hand keypoints


def test_an_occlusion_can_start_late():
    """`after_s`: a limb or parts occlusion starts that far into the clip (a track first sees the person whole), at
    any rate; a random occlusion cannot start late."""
    legs = (("l", LIMBS["left_leg"]), ("r", LIMBS["right_leg"]))
    for stride in (1, 3):
        cor = Corruption("late", "smplx55", occlusion=Occlusion("parts", legs, after_s=0.5), stride=stride)
        _, _, visible, frames = cor.apply(posed_clip(30), 0)
        late = frames >= 15  # 0.5 s at 30 Hz
        assert visible[~late].all() and where(~visible[late][0]) == {1, 2, 4, 5, 7, 8, 10, 11}
        assert (~visible[late]).sum(1).eq(8).all()
    with pytest.raises(CorruptionError, match="after_s"):
        Occlusion("random", fraction=0.3, after_s=1.0)
    with pytest.raises(CorruptionError, match="after_s"):
        Occlusion("parts", legs, after_s=float("nan"))


def test_random_occlusion_hides_the_fraction_every_frame():
    cor = Corruption("r", "coco17", occlusion=Occlusion("random", fraction=0.3))
    _, _, visible, _ = cor.apply(posed_clip(30), 3)
    assert ((~visible).sum(1) == round(0.3 * 17)).all()
    assert len({tuple(v.tolist()) for v in visible}) > 5  # drawn per frame


def test_radar_emits_a_third_of_the_frames():
    cor = Corruption("radar", "radar14", noise_cm=(5.0, 10.0), stride=3, keypoint_dropout=0.05, frame_dropout=0.3)
    assert cor.rate_hz == 10.0
    sigmas = set()
    for seed in range(5):
        points, conf, visible, frames = out = cor.apply(posed_clip(60), seed)
        assert torch.equal(frames, torch.arange(0, 60, 3)) and points.shape == (20, 14, 3)
        assert visible[0].any()  # the first frame is never dropped whole
        assert 5.0 <= out.sigma_cm <= 10.0
        sigmas.add(out.sigma_cm)
        assert (conf[~visible] == 0).all()
    assert len(sigmas) == 5


def test_corruption_file_loads_and_rejects_mistakes(tmp_path):
    cors = load_corruptions()
    for name in ("cam_noise_2cm", "cam_noise_4cm", "cam_noise_10cm", "cam_occl_limb", "cam_occl_legs", "cam_occl_hands",
                 "cam_occl_random30", "radar"):
        assert cors[name].clips == "body"
    assert cors["radar"].format.name == "radar14" and cors["radar"].stride == 3 and cors["radar"].noise_cm == (5.0, 10.0)
    assert cors["cam_occl_hands"].format.name in ("coco_wholebody133", "smplx55")
    assert cors["cam_occl_limb"].occlusion.kind == "limb" and len(cors["cam_occl_limb"].occlusion.limbs) == 4
    hands = [c for c in cors.values() if c.clips == "hands"]
    assert hands and all({"left_hand", "right_hand"} <= set(c.format.parts) for c in hands)
    bad = tmp_path / "bad.yaml"
    bad.write_text("corruptions:\n  - {name: x, format: coco17, nosie_cm: 2}\n")
    with pytest.raises(CorruptionError, match="nosie_cm"):
        load_corruptions(bad)
    bad.write_text("limbs: {a: [left_hip]}\ncorruptions:\n  - {name: x, format: coco17, occlusion: {kind: limb, limbs: [b]}}\n")
    with pytest.raises(CorruptionError, match="unknown limbs"):
        load_corruptions(bad)
    bad.write_text("corruptions:\n  - {name: x, format: coco18}\n")
    with pytest.raises(CorruptionError, match="coco18"):
        load_corruptions(bad)


def test_joined_format_holds_both_hands():
    fmt = resolve_format("mediapipe_hand21_left+mediapipe_hand21_right")
    assert fmt.num_keypoints == 42 and resolve_format("mediapipe_hand21_left+mediapipe_hand21_right") is fmt
    posed = posed_clip(2)
    both = fmt.from_posed(posed)
    assert torch.equal(both[:, 21:], get_format("mediapipe_hand21_right").from_posed(posed))


# ---------------------------------------------------------------- runner


def oracle(sequence: list[torch.Tensor]):
    """Returns the ground truth, frame after frame, in the runner's documented order."""
    it = iter(sequence)
    return lambda fmt: (lambda obs, init: refined(next(it)[None]))


def expected_truth(corruptions, clips, seed):
    seq = []
    for cor in corruptions:
        for clip in (c for c in clips if c.kind == cor.clips):
            posed = clip.posed()
            seq += list(posed.joints[cor.apply(posed, stream_seed(seed, cor.name, clip.name)).frames])
    return seq


def test_runner_oracle_scores_zero_and_keypoints_only_scores_the_input():
    clips = [make_clip("a", 12), make_clip("b", 12, phase=1.0), make_clip("h", 9, kind="hands")]
    cors = [Corruption("noise", "smplx55", noise_cm=(3.0, 3.0)),
            Corruption("radar", "smplx55", noise_cm=(5.0, 10.0), stride=3),
            Corruption("hands", "smplx55", clips="hands", noise_cm=(1.0, 1.0))]
    res = evaluate({"oracle": oracle(expected_truth(cors, clips, 5))}, cors, clips, seed=5, progress=False)
    for cor in cors:
        m = res.row(cor.name, "oracle").metrics
        assert res.row(cor.name, "oracle").error is None
        for key in ("mpjpe_all", "pa_mpjpe", "accel", "hand_mpjpe", "mpjpe_visible"):
            assert math.isnan(m[key]) or m[key] < 1e-3, (cor.name, key, m[key])
    assert res.row("radar", "oracle").metrics["frames"] == 2 * 4  # 12 frames at 10 Hz = 4, two body clips
    assert not math.isnan(res.row("hands", "oracle").metrics["hand_mpjpe"])
    assert math.isnan(res.row("hands", "oracle").metrics["mpjpe_all"])  # no body truth in hand clips

    res = evaluate({"kp": keypoints_only}, cors[:2], clips, seed=5, progress=False)
    for cor in cors[:2]:
        errs = []
        for clip in clips[:2]:
            posed = clip.posed()
            points, _, _, frames = cor.apply(posed, stream_seed(5, cor.name, clip.name))
            errs.append((points.double() - posed.joints[frames])[:, list(BODY_JOINTS)].norm(dim=-1).flatten())
        assert res.row(cor.name, "kp").metrics["mpjpe_all"] == pytest.approx(float(torch.cat(errs).mean()) * 1000, rel=1e-5)
    assert res.row("noise", "kp").metrics["mpjpe_all"] == pytest.approx(30 * 1.596, rel=0.2)  # 3 cm per axis


def test_runner_gives_every_method_identical_inputs_and_its_own_warm_start():
    calls: dict[str, list] = {"a": [], "b": []}

    def recorder(name, offset):
        def factory(fmt):
            def solve(obs, init):
                count = len(calls[name])
                pose = torch.full((1, NUM_JOINTS, 3), offset + 0.001 * count)
                calls[name].append((obs.points.clone(), obs.confidence.clone(), None if init is None else init.pose.clone()))
                return refined(obs.points, pose)
            return solve
        return factory

    clips = [make_clip("a", 9), make_clip("b", 9, phase=2.0)]
    cors = [Corruption("occ", "smplx55", noise_cm=(2.0, 2.0), occlusion=Occlusion("random", fraction=0.3))]
    res = evaluate({"a": recorder("a", 0.0), "b": recorder("b", 1.0)}, cors, clips, seed=1, progress=False,
                   keep_streams=True)
    assert len(calls["a"]) == len(calls["b"]) == 18
    for i, ((pa, ca, ia), (pb, cb, ib)) in enumerate(zip(calls["a"], calls["b"])):
        assert torch.equal(pa, pb) and torch.equal(ca, cb)
        if i % 9 == 0:
            assert ia is None and ib is None  # every clip starts cold
        else:  # warm start from the method's own previous answer
            assert torch.allclose(ia, torch.full_like(ia, 0.001 * (i - 1)))
            assert torch.allclose(ib, torch.full_like(ib, 1.0 + 0.001 * (i - 1)))
    stream = res.streams[("occ", "a")]
    again = cors[0].apply(clips[0].posed(), stream_seed(1, "occ", "a"))
    assert torch.equal(stream.points.nan_to_num(9.0), again.points.nan_to_num(9.0))
    # the same inputs whatever else runs
    alone = evaluate({"kp": keypoints_only}, cors, clips[:1], seed=1, progress=False)
    assert alone.inputs["occ"]["clips"][0]["sha1"] == res.inputs["occ"]["clips"][0]["sha1"]


def test_runner_records_a_failing_method_and_goes_on(tmp_path):
    def broken(fmt):
        def solve(obs, init):
            if init is not None:
                raise RuntimeError("boom")
            return refined(obs.points)
        return solve

    def unbuildable(fmt):
        raise ImportError("no such solver")

    clips = [make_clip("a", 6)]
    cors = [Corruption("noise", "smplx55", noise_cm=(2.0, 2.0)), Corruption("legs", "smplx55", noise_cm=(2.0, 2.0),
            occlusion=Occlusion("parts", (("l", LIMBS["left_leg"]), ("r", LIMBS["right_leg"]))))]
    res = evaluate({"broken": broken, "unbuildable": unbuildable, "kp": keypoints_only}, cors, clips, progress=False)
    assert "boom" in res.row("noise", "broken").error
    assert "no such solver" in res.row("legs", "unbuildable").error
    ok = res.row("legs", "kp")
    assert ok.error is None and ok.metrics["frames"] == 6
    assert ok.metrics["mpjpe_occluded"] > 300  # hidden legs answered with zeros
    paths = write_report(res, tmp_path / "report")
    table = paths["table"].read_text()
    assert "FAILED" in table and "| legs | smplx55 | 30 | kp | 6 |" in table
    data = json.loads(paths["json"].read_text())
    assert {r["method"] for r in data["results"]} == {"broken", "unbuildable", "kp"}
    assert paths["plot"].stat().st_size > 1000


def _result(per_clip: dict[str, dict[str, list]], sha1: str = "s") -> dict:
    """A results.json by hand: method -> occluded-joint errors of clips c0, c1, ... under one limb occlusion."""
    cor = Corruption("occ", "smplx55", occlusion=Occlusion("limb", (("l", LIMBS["left_leg"]),))).to_dict()
    n = len(next(iter(per_clip.values())))
    return {"methods": list(per_clip), "corruptions": [cor],
            "inputs": {"occ": {"clips": [{"clip": f"c{i}", "sha1": sha1} for i in range(n)]}},
            "results": [{"corruption": "occ", "method": m, "error": None,
                         "clips": [{"clip": f"c{i}", "mpjpe_occluded": v, "mpjpe_all": 1.0} for i, v in enumerate(vals)]}
                        for m, vals in per_clip.items()]}


def test_paired_comparison_is_clip_by_clip():
    assert compare.primary_metric(Corruption("n", "smplx55").to_dict()) == "mpjpe_all"
    assert compare.primary_metric(Corruption("h", "smplx55", clips="hands").to_dict()) == "hand_mpjpe"
    hands = Corruption("h", "smplx55", clips="hands", occlusion=Occlusion("random", fraction=0.3)).to_dict()
    assert compare.primary_metric(hands, keypoint_truth=True) == "mpjpe_occluded"  # keypoint truth has no hand MPJPE
    assert compare.keypoint_truth({"clips": [{"truth": "keypoints"}]}) and not compare.keypoint_truth({"clips": [{}]})
    # b is 10 mm worse on every clip; c is better on most clips; the clip without occluded joints is left out
    res = _result({"a": [100.0, 50.0, 80.0, None, 60.0], "b": [110.0, 60.0, 90.0, 70.0, 70.0],
                   "c": [90.0, 45.0, 85.0, 10.0, 40.0]})
    rows = {r["method"]: r for r in compare.paired(res, "a")}
    b, c = rows["b"], rows["c"]
    assert b["metric"] == "mpjpe_occluded" and b["clips"] == 4 and b["reference_better"] == 4
    assert b["difference_mm"] == pytest.approx(-10.0) and b["ci95_mm"] == pytest.approx([-10.0, -10.0])
    assert b["ratio"] == pytest.approx(290.0 / 330.0)
    assert c["difference_mm"] == pytest.approx(7.5) and c["reference_better"] == 1
    assert c["ci95_mm"][0] < 7.5 < c["ci95_mm"][1] and c["ratio_ci95"][0] < c["ratio"] < c["ratio_ci95"][1]
    table = compare.markdown(compare.paired(res, "a"), "a")
    assert "| occ | mpjpe_occluded | b | 4 | 72.5 | 82.5 | -10.0 (better) |" in table
    assert compare.paired(res, "a") == compare.paired(res, "a")  # a fixed seed: the same interval every time


def test_compare_merges_runs_and_refuses_different_streams(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_result({"few_step": [1.0, 2.0]})))
    b.write_text(json.dumps(_result({"full": [2.0, 2.0]})))
    assert main(["compare", str(a), str(b)]) == 0
    assert "| occ | mpjpe_occluded | full | 2 | 1.5 | 2.0 | -0.5 |" in capsys.readouterr().out
    plot = tmp_path / "ratios.png"
    assert compare.main([str(a), str(b), "--plot", str(plot)]) == 0
    assert f"plot: {plot}" in capsys.readouterr().out and plot.stat().st_size > 1000
    assert compare.main([str(a)]) == 2  # nothing to compare with
    assert "--reference" in capsys.readouterr().err
    b.write_text(json.dumps(_result({"full": [2.0, 2.0]}, sha1="other")))
    assert compare.main([str(a), str(b)]) == 2
    assert "different streams" in capsys.readouterr().err
    b.write_text("{not json")
    assert compare.main([str(a), str(b)]) == 2
    assert "results.json" in capsys.readouterr().err


def test_report_compares_the_first_method_with_the_others(tmp_path):
    def shifted(fmt):
        return lambda obs, init: refined(obs.points + 0.01)

    cors = [Corruption("noise", "smplx55", noise_cm=(2.0, 2.0))]
    res = evaluate({"kp": keypoints_only, "shifted": shifted}, cors, [make_clip("a", 6), make_clip("b", 6)],
                   progress=False)
    paths = write_report(res, tmp_path)
    assert "| noise | mpjpe_all | shifted | 2 |" in paths["table"].read_text()
    paired = json.loads(paths["json"].read_text())["paired"]
    assert paired["reference"] == "kp" and paired["rows"][0]["difference_mm"] < 0


def test_method_registry(tmp_path):
    assert "few_step" in METHODS
    with pytest.raises(MethodError, match="available methods: few_step"):
        build_methods(["few_stpe"], prior=None)
    factories, errors = build_methods(["few_step"], prior=None)  # builds lazily: the prior is used per format
    assert set(factories) == {"few_step"} and not errors
    factories, errors = build_methods(["few_step", "gmm"], prior=None, options={"baselines_dir": tmp_path})
    assert set(factories) == {"few_step"} and "dposer baselines" in errors["gmm"]


# ---------------------------------------------------------------- clips and the command


def fake_dataset() -> PoseDataset:
    """Takes: s0/t0 test 40 frames, s0/t1 test 25, s0/t2 train 40, s1/t3 test 30 with a gap after 10, hands/t4 test 50."""
    takes = [("s0", "test", 40, None), ("s0", "test", 25, None), ("s0", "train", 40, None), ("s1", "test", 30, 10),
             ("hands", "test", 50, None)]
    rows = {k: [] for k in ("pose", "transl", "part_mask", "source", "take", "frame", "fit_error_mm")}
    sources = ["s0", "s1", "hands"]
    for i, (src, _, n, gap) in enumerate(takes):
        pose, transl = hand_made_poses(n, phase=i)
        frames = np.arange(n) + (np.arange(n) >= gap) * 5 if gap else np.arange(n)
        rows["pose"].append(pose.numpy().astype(np.float32))
        rows["transl"].append(transl.numpy().astype(np.float32))
        rows["part_mask"].append(np.tile([src != "hands", src == "hands", src == "hands", False], (n, 1)))
        rows["source"].append(np.full(n, sources.index(src), np.int16))
        rows["take"].append(np.full(n, i, np.int32))
        rows["frame"].append(frames.astype(np.int32))
        rows["fit_error_mm"].append(np.zeros(n, np.float32))
    meta = {"sources": sources, "takes": [f"{s}/t{i}" for i, (s, *_) in enumerate(takes)],
            "take_split": [sp for _, sp, _, _ in takes], "fps": 30}
    return PoseDataset(**{k: np.concatenate(v) for k, v in rows.items()}, meta=meta)


def test_clip_selection_is_deterministic_and_spreads_over_takes_and_sources():
    data = fake_dataset()
    clips = select_clips(data, 3, 12, "body", seed=0)
    assert [c.name for c in clips] == [c.name for c in select_clips(data, 3, 12, "body", seed=0)]
    assert len({c.take for c in clips}) == 3 and {c.source for c in clips} == {"s0", "s1"}
    assert all(c.take != "s0/t2" for c in clips)  # train take
    s1 = next(c for c in clips if c.source == "s1")
    assert s1.start >= 15  # the 10-frame run before the gap is too short
    many = select_clips(data, 10, 12, "body", seed=0)
    assert len(many) == 6  # t0: 3 slots, t1: 2, t3: 1
    spans = {(c.take, f) for c in many for f in range(c.start, c.start + 12)}
    assert len(spans) == 6 * 12  # no overlap
    hands = select_clips(data, 2, 20, "hands", seed=0)
    assert [c.take for c in hands] == ["hands/t4"] * 2 and hands[0].part_mask[:, 1:3].all()
    for c in many:
        i = int(np.flatnonzero((data.take == data.meta["takes"].index(c.take)) & (data.frame == c.start))[0])
        assert torch.equal(c.pose, torch.from_numpy(data.pose[i : i + 12]))
    only = select_clips(data, 10, 12, "body", seed=0, takes=("s1/",))
    assert [c.take for c in only] == ["s1/t3"]  # a take filter keeps only matching takes
    with pytest.raises(ValueError, match="no test take matching nothing"):
        select_clips(data, 2, 12, "body", seed=0, takes=("nothing",))


def test_eval_command_end_to_end(tmp_path, capsys):
    from dposer_ros.prior.layout import DIM
    from dposer_ros.prior.model import Normalizer, PosePrior
    from dposer_ros.prior.network import ScoreNet
    from dposer_ros.prior.sde import SubVPSDE

    torch.manual_seed(0)
    prior = PosePrior(ScoreNet(hidden=32, blocks=1, time_dim=16, groups=8, dropout=0.0), SubVPSDE(),
                      Normalizer(torch.zeros(DIM), torch.full((DIM,), 0.5)))
    prior.save(tmp_path / "prior.pt")
    data = fake_dataset()
    save_dataset(tmp_path / "data.npz", {k: getattr(data, k) for k in
                                         ("pose", "transl", "part_mask", "source", "take", "frame", "fit_error_mm")},
                 data.meta)
    args = ["eval", "--protocol", "inhouse", "--prior", str(tmp_path / "prior.pt"), "--dataset", str(tmp_path / "data.npz"), "--clips", "2",
            "--hand-clips", "1", "--frames", "6", "--quiet", "--out", str(tmp_path / "out")]
    assert main(args + ["--methods", "few_step,nonesuch"]) == 2
    assert "available methods: few_step" in capsys.readouterr().err
    assert main(args + ["--corruptions", "cam_noise_4cm,radar,hands_noise_5mm"]) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = {(r["corruption"], r["method"]): r for r in result["results"]}
    assert rows[("cam_noise_4cm", "few_step")]["metrics"]["frames"] == 12
    assert rows[("radar", "few_step")]["metrics"]["frames"] == 4
    assert rows[("hands_noise_5mm", "few_step")]["metrics"]["hand_mpjpe"] is not None
    assert all(r["error"] is None for r in result["results"])
    assert (tmp_path / "out" / "accuracy_latency.png").is_file()


@pytest.mark.skipif(not default_dataset_path().is_file(), reason="the built dataset is not here")
def test_real_dataset_clips():
    data = load_dataset(default_dataset_path())
    clips = select_clips(data, 12, 60, "body", seed=0)
    split = np.array(data.meta["take_split"])
    assert len(clips) == 12 and len({c.take for c in clips}) == 12
    assert len({c.source for c in clips}) >= 3
    assert all(split[data.meta["takes"].index(c.take)] == "test" and c.part_mask[:, 0].all() for c in clips)
    hands = select_clips(data, 2, 60, "hands", seed=0)
    assert hands and all(c.part_mask[:, 1:3].all() for c in hands)


# ---------------------------------------------------------------- foreign skeletons and the user's keypoints

MOCAP = default_mocap_dir()


def test_undefined_keypoints_are_never_shown_and_random_occlusion_counts_the_defined():
    truth = torch.randn(10, 17, 3, dtype=torch.float64)
    truth[:, [9, 10]] = float("nan")  # a skeleton without the two head keypoints
    cor = Corruption("r", "h36m17", noise_cm=(1.0, 1.0), occlusion=Occlusion("random", fraction=0.4))
    data = cor.apply_keypoints(truth, 3)
    assert not data.visible[:, [9, 10]].any() and torch.isnan(data.points[:, [9, 10]]).all()
    assert (data.visible.sum(1) == 15 - round(0.4 * 15)).all()
    bias = Corruption("b", "h36m17", bias=((15,), (0.0, 5.0, 0.0)))
    moved = bias.apply_keypoints(truth.nan_to_num(), 0).points - truth.nan_to_num().float()
    head = get_format("h36m17").joints == 15
    assert torch.allclose(moved[:, torch.as_tensor(head), 1], torch.tensor(0.05)) and moved[:, ~torch.as_tensor(head)].abs().max() < 1e-6


def test_foreign_hidden_hands_hide_the_two_wrists_from_the_first_frame():
    """`cam_occl_hands` of the foreign protocol: Human3.6M-17 has no finger keypoints, so hiding both hands hides
    its two wrist keypoints, in every frame, and nothing else."""
    from dposer_ros.paths import config_path

    cor = load_corruptions(config_path("eval/corruptions_foreign.yaml"))["cam_occl_hands"]
    fmt = get_format("h36m17")
    assert cor.format is fmt and cor.clips == "body" and cor.occlusion.kind == "parts"
    data = cor.apply_keypoints(torch.randn(12, 17, 3, dtype=torch.float64), 5)
    wrists = [fmt.index("left_wrist"), fmt.index("right_wrist")]
    assert not data.visible[:, wrists].any() and torch.isnan(data.points[:, wrists]).all()
    others = [k for k in range(17) if k not in wrists]
    assert data.visible[:, others].all()


@pytest.mark.skipif(not MOCAP.is_dir(), reason="shared/data/mocap is not beside the checkout")
def test_foreign_clips_are_the_source_skeletons_own_joints():
    from dposer_ros.dataset.build import BuildConfig
    from dposer_ros.evaluation.foreign import foreign_clips, foreign_table, split_of_takes, take_points
    from dposer_ros.paths import config_path
    from dposer_ros.retarget.sources import load_sources

    clips = foreign_clips(MOCAP, 4, 20, "val", seed=0, formats=("h36m17", "coco17"))
    assert len({c.take for c in clips}) == 4 and {c.source for c in clips} == {"bandai", "cmu", "hdm05", "reactidle"}
    build = BuildConfig.from_yaml(config_path("data/build.yaml"))
    val = {t.take_id for t in split_of_takes(MOCAP, build)["val"]}
    h36m = get_format("h36m17")
    for clip in clips:
        assert clip.take in val
        h, coco = clip.truth["h36m17"], clip.truth["coco17"]
        assert h.shape == (20, 17, 3) and torch.isnan(coco[:, 0]).all()  # no skeleton defines COCO's nose
        thigh = (h[:, h36m.index("left_hip")] - h[:, h36m.index("left_knee")]).norm(dim=-1)
        assert 0.3 < float(thigh.mean()) < 0.55  # metres, the actor's own
    bandai = next(c for c in clips if c.source == "bandai")
    take = next(t for t in split_of_takes(MOCAP, build)["val"] if t.take_id == bandai.take)
    points = take_points(load_sources()["bandai"], take)
    start = bandai.start
    assert torch.allclose(bandai.truth["h36m17"][:, 0], torch.from_numpy(points["pelvis"][start : start + 20]))
    assert foreign_table()["rigs"]["bandai"][0]["points"]["pelvis"] == "Hips"
    floor = foreign_clips(MOCAP, 2, 20, "val", seed=0, formats=("h36m17",), takes=("lieDownFloor",))
    assert len(floor) == 2 and all("lieDownFloor" in c.take for c in floor)  # only takes whose id holds the string
    with pytest.raises(ValueError, match="no val take's id holds"):
        foreign_clips(MOCAP, 1, 20, "val", seed=0, formats=("h36m17",), takes=("noSuchTake",))


@pytest.mark.skipif(not MOCAP.is_dir(), reason="shared/data/mocap is not beside the checkout")
def test_foreign_hand_clips_are_the_captures_own_joints():
    """Both hands of a two-hand capture read as both MediaPipe hands by joint name; the fingertips, zero-length End
    Sites in the capture, are undefined; a take gives several windows (there are few hand takes)."""
    from dposer_ros.evaluation.foreign import foreign_clips
    from dposer_ros.sensors import resolve_format

    name = "mediapipe_hand21_left+mediapipe_hand21_right"
    clips = foreign_clips(MOCAP, 3, 20, "val", seed=0, formats=(name,), kind="hands")
    assert len(clips) == 3 and {c.kind for c in clips} == {"hands"} and len({c.take for c in clips}) == 1
    fmt = resolve_format(name)
    truth = clips[0].truth[name]
    tips = [k for k, n in enumerate(fmt.keypoint_names) if n.endswith("tip")]
    assert truth.shape == (20, 42, 3) and len(tips) == 10 and torch.isnan(truth[:, tips]).all()
    joints = [k for k in range(42) if k not in tips]
    assert torch.isfinite(truth[:, joints]).all()
    wrist, middle = fmt.keypoint_names.index(f"{name.split('+')[0]}/wrist"), fmt.keypoint_names.index(
        f"{name.split('+')[0]}/middle_finger_mcp")
    palm = (truth[:, wrist] - truth[:, middle]).norm(dim=-1)
    assert 0.07 < float(palm.mean()) < 0.14  # metres: a hand's wrist to middle knuckle
    left, right = truth[:, 0], truth[:, 21]
    assert float((left - right).norm(dim=-1).mean()) > 0.05  # two hands, not one twice


def test_eval_on_keypoints_a_user_brings(tmp_path, capsys):
    from dposer_ros.prior.layout import DIM
    from dposer_ros.prior.model import Normalizer, PosePrior
    from dposer_ros.prior.network import ScoreNet
    from dposer_ros.prior.sde import SubVPSDE

    torch.manual_seed(0)
    PosePrior(ScoreNet(hidden=32, blocks=1, time_dim=16, groups=8, dropout=0.0), SubVPSDE(),
              Normalizer(torch.zeros(DIM), torch.full((DIM,), 0.5))).save(tmp_path / "prior.pt")
    fmt = get_format("h36m17")
    pose, transl = hand_made_poses(16)
    points = fmt.from_posed(ForwardKinematics()(pose.double(), transl.double())).numpy()
    points[:, fmt.index("head_top")] += [0.0, 0.04, 0.0]  # another convention
    conf = np.ones(points.shape[:2])
    conf[8:, fmt.index("spine")] = 0.0  # the second clip's skeleton has no spine keypoint
    np.savez(tmp_path / "mine.npz", keypoints=points, clip=np.repeat(["walk", "wave"], 8), confidence=conf,
             up=[0.0, 1.0, 0.0], floor=-1.3)
    args = ["eval", "--prior", str(tmp_path / "prior.pt"), "--keypoints", str(tmp_path / "mine.npz"), "--format", "h36m17",
            "--frames", "8",
            "--methods", "no_prior,few_step", "--corruptions", "cam_noise_2cm,cam_occl_legs", "--quiet",
            "--out", str(tmp_path / "out")]
    assert main(args) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [c["name"] for c in result["clips"]] == ["walk@0", "wave@0"]
    assert [c["up"] for c in result["clips"]] == [[0.0, 1.0, 0.0]] * 2  # told to the prior
    assert [c["floor"] for c in result["clips"]] == [-1.3] * 2  # and to the pelvis-tilt pull
    assert {c["format"] for c in result["corruptions"]} == {"h36m17"}
    rows = {(r["corruption"], r["method"]): r for r in result["results"]}
    assert rows[("cam_occl_legs", "few_step")]["metrics"]["frames"] == 16
    assert rows[("cam_occl_legs", "few_step")]["metrics"]["occluded_joints"] == 16 * 4  # knees and ankles
    assert rows[("cam_noise_2cm", "no_prior")]["metrics"]["occluded_joints"] == 0
    assert result["paired"]
    capsys.readouterr()
    assert main(args[:5] + args[7:]) == 2  # no --format
    assert "--keypoints needs --format" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", keypoints=points[:, :10])
    assert main(["eval", "--prior", str(tmp_path / "prior.pt"), "--keypoints", str(tmp_path / "bad.npz"), "--format",
                 "h36m17", "--out", str(tmp_path / "o2")]) == 2
    assert "must be (N, 17, 3)" in capsys.readouterr().err
    np.savez(tmp_path / "bad_up.npz", keypoints=points, up=[0.0, 0.0, 0.0])
    assert main(["eval", "--prior", str(tmp_path / "prior.pt"), "--keypoints", str(tmp_path / "bad_up.npz"), "--format",
                 "h36m17", "--out", str(tmp_path / "o3")]) == 2
    assert "'up' must be one direction" in capsys.readouterr().err
    np.savez(tmp_path / "bad_floor.npz", keypoints=points, floor=0.0)
    assert main(["eval", "--prior", str(tmp_path / "prior.pt"), "--keypoints", str(tmp_path / "bad_floor.npz"),
                 "--format", "h36m17", "--out", str(tmp_path / "o5")]) == 2
    assert "'floor' must be one finite height" in capsys.readouterr().err
    settings = args + ["--set", "pelvis_tilt_weight=0", "--set", "steps=2"]
    settings[settings.index("--out") + 1] = str(tmp_path / "o4")
    assert main(settings) == 0  # refiner settings for every refining method
    changed = json.loads((tmp_path / "o4" / "results.json").read_text())
    assert changed["settings"] == {"pelvis_tilt_weight": 0, "steps": 2}
    before = {(r["corruption"], r["method"]): r["metrics"]["mpjpe_all"] for r in result["results"]}
    after = {(r["corruption"], r["method"]): r["metrics"]["mpjpe_all"] for r in changed["results"]}
    assert after[("cam_noise_2cm", "few_step")] != before[("cam_noise_2cm", "few_step")]  # the refiner ran with them
    assert main(args + ["--set", "no_such_setting=1"]) == 2
    assert "expected KEY=VALUE with KEY a refiner setting" in capsys.readouterr().err


def test_the_floor_of_each_source_is_known_where_its_capture_has_one():
    from dposer_ros.evaluation.foreign import source_floor

    assert source_floor("bandai") == 0.0 and source_floor("cmu") == 0.0 and source_floor("hdm05") == 0.0
    assert source_floor("reactidle") is None and source_floor("no_such_source") is None


def test_eval_runs_the_refiners_network_on_a_backend(tmp_path, monkeypatch):
    """`--backend onnxruntime --int8`: the refiners' network as the node runs it (recorded), the results close to
    the checkpoint's; the baselines and the full optimisation keep the checkpoint."""
    from dposer_ros.prior.layout import DIM
    from dposer_ros.prior.model import Normalizer, PosePrior
    from dposer_ros.prior.network import ScoreNet
    from dposer_ros.prior.sde import SubVPSDE

    monkeypatch.setenv("DPOSER_ENGINE_DIR", str(tmp_path / "engines"))
    torch.manual_seed(0)
    PosePrior(ScoreNet(hidden=64, blocks=1, time_dim=16, groups=8, dropout=0.0), SubVPSDE(),
              Normalizer(torch.zeros(DIM), torch.full((DIM,), 0.5))).save(tmp_path / "prior.pt")
    fmt = get_format("h36m17")
    pose, transl = hand_made_poses(12)
    np.savez(tmp_path / "mine.npz", keypoints=fmt.from_posed(ForwardKinematics()(pose.double(), transl.double())).numpy(),
             clip=np.repeat(["walk"], 12))
    args = ["eval", "--prior", str(tmp_path / "prior.pt"), "--keypoints", str(tmp_path / "mine.npz"), "--format", "h36m17",
            "--frames", "12", "--methods", "few_step,no_prior", "--corruptions", "cam_occl_legs", "--quiet"]
    runs = {}
    for name, extra in (("checkpoint", []), ("int8", ["--backend", "onnxruntime", "--int8"])):
        assert main(args + extra + ["--out", str(tmp_path / name)]) == 0
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert runs["checkpoint"]["engine"] == "checkpoint (torch)" and runs["int8"]["engine"] == "onnxruntime-cpu-int8"
    errors = {name: {r["method"]: r["metrics"]["mpjpe_occluded"] for r in run["results"]} for name, run in runs.items()}
    assert errors["int8"]["no_prior"] == errors["checkpoint"]["no_prior"]  # no network: the same
    assert errors["int8"]["few_step"] == pytest.approx(errors["checkpoint"]["few_step"], rel=0.05)
