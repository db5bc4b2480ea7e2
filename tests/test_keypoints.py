"""Keypoint formats: tables load, landmark geometry is sane and rigid, sides are right, errors are clear."""

import re
from importlib import resources

import numpy as np
import pytest
import torch

from dposer_ros.body import NUM_JOINTS, ForwardKinematics, smplx_neutral
from dposer_ros.keypoints import (
    KeypointFormat,
    KeypointFormatError,
    get_format,
    known_formats,
    load_formats,
    load_landmarks,
)
from dposer_ros.keypoints.derive_landmarks import derive

COUNTS = {
    "smplx55": 55,
    "coco17": 17,
    "coco_wholebody133": 133,
    "h36m17": 17,
    "mediapipe33": 33,
    "mediapipe_hand21_left": 21,
    "mediapipe_hand21_right": 21,
    "mediapipe_holistic75": 75,
    "radar14": 14,
    "azure_kinect32": 32,
    "openpose_body25": 25,
    "halpe26": 26,
    "zed_body18": 18,
    "zed_body34": 34,
    "zed_body38": 38,
}
SKEL = smplx_neutral()
FK = ForwardKinematics()
LANDMARK_NAMES = {(m.joint, m.offset): name for name, m in load_landmarks().items()}


def _rest(fmt: KeypointFormat, rest_joints: np.ndarray | None = None) -> np.ndarray:
    """(K, 3) keypoints of the rest pose (optionally of another rest skeleton)."""
    rest = None if rest_joints is None else torch.as_tensor(rest_joints, dtype=torch.float64)
    posed = FK(torch.zeros(NUM_JOINTS, 3, dtype=torch.float64), rest_joints=rest)
    return fmt.from_posed(posed).numpy()


def _swap(name: str) -> str:
    return name.replace("left", "\0").replace("right", "left").replace("\0", "right")


def _side(name: str) -> str | None:
    tokens = name.replace("-", "_").split("_")
    return "left" if "left" in tokens else "right" if "right" in tokens else None


def _target(fmt: KeypointFormat, k: int) -> str:
    """What keypoint k is attached to: its landmark's name if it has an offset, else the joint's name."""
    return SKEL.names[fmt.joints[k]] if not fmt.offsets[k].any() else _landmark_name(fmt, k)


def _landmark_name(fmt: KeypointFormat, k: int) -> str:
    key = (int(fmt.joints[k]), tuple(fmt.offsets[k]))
    assert key in LANDMARK_NAMES, f"{fmt.name}:{fmt.keypoint_names[k]} matches no landmark"
    return LANDMARK_NAMES[key]


def test_every_known_format_loads_with_its_count():
    assert set(known_formats()) == set(COUNTS)
    for name, count in COUNTS.items():
        fmt = get_format(name)
        assert fmt.name == name and fmt.num_keypoints == count == len(fmt.parts) == len(fmt.weights)
        assert fmt.joints.shape == (count,) and fmt.offsets.shape == (count, 3)
        assert len(set(fmt.keypoint_names)) == count
        assert get_format(name) is fmt  # cached


def test_packaged_tables_are_resources():
    files = {f.name for f in resources.files("dposer_ros.keypoints.formats").iterdir() if f.name.endswith(".yaml")}
    assert files == {f"{n}.yaml" for n in COUNTS}
    assert resources.files("dposer_ros.keypoints").joinpath("landmarks.yaml").is_file()


def test_landmarks_table_is_the_documented_derivation():
    text = resources.files("dposer_ros.keypoints").joinpath("landmarks.yaml").read_text()
    assert text == derive(), "landmarks.yaml is stale: regenerate with python -m dposer_ros.keypoints.derive_landmarks"


def test_smplx55_is_exactly_the_fk_joints():
    torch.manual_seed(0)
    posed = FK(torch.randn(4, NUM_JOINTS, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64))
    fmt = get_format("smplx55")
    assert fmt.keypoint_names == SKEL.names
    assert torch.equal(fmt.from_posed(posed), posed.joints)


def test_landmark_geometry_at_rest():
    wb = get_format("coco_wholebody133")
    kp = dict(zip(wb.keypoint_names, _rest(wb)))
    j = dict(zip(SKEL.names, SKEL.rest_joints))
    nose = kp["nose"]
    assert nose[2] > j["head"][2] + 0.05 and nose[1] > j["head"][1] and nose[1] > j["neck"][1]
    assert kp["left_ear"][0] > j["head"][0] + 0.05 > j["head"][0] - 0.05 > kp["right_ear"][0]
    assert kp["left_ear"][2] < kp["left_eye"][2] and kp["left_ear"][2] < nose[2] - 0.08
    for side in ("left", "right"):
        ankle, foot = j[f"{side}_ankle"], j[f"{side}_foot"]
        heel, toe = kp[f"{side}_heel"], kp[f"{side}_big_toe"]
        assert heel[1] < ankle[1] - 0.03 and heel[2] < ankle[2] - 0.03
        assert toe[2] > foot[2] + 0.03 and abs(toe[1] - foot[1]) < 0.02
        assert np.linalg.norm(toe - heel) == pytest.approx(0.25, abs=0.03)  # adult foot length
        wrist = j[f"{side}_wrist"]
        for finger, wb_name in [("thumb", "thumb"), ("index", "forefinger"), ("middle", "middle_finger"),
                                ("ring", "ring_finger"), ("pinky", "pinky_finger")]:
            j2, j3, tip = j[f"{side}_{finger}2"], j[f"{side}_{finger}3"], kp[f"{side}_{wb_name}4"]
            assert np.linalg.norm(tip - wrist) > np.linalg.norm(j3 - wrist) + 0.01
            # beyond joint3 along the last segment, 0.8-1.0 of its length
            seg = j3 - j2
            along = np.dot(tip - j3, seg) / np.linalg.norm(seg) ** 2
            assert 0.8 <= along <= 1.0 and np.linalg.norm(np.cross(tip - j3, seg)) / np.linalg.norm(seg) < 5e-4
    # the face points sit on the front of the head, between chin and brows
    face = np.array([kp[f"face-{i}"] for i in range(68)])
    assert (face[:, 1] > j["neck"][1]).all() and (face[:, 1] < kp["face-19"][1] + 1e-9).all()
    assert (face[:, 2] > j["head"][2]).all()
    assert np.all(wb.weights[23:91] == 0.2) and np.all(np.delete(wb.weights, range(23, 91)) == 1.0)
    # Human3.6M's own skeleton: 'Neck/Nose' 12 cm and 'Head' 24 cm above its thorax (the SMPL-X neck joint), the
    # head above the brows but below the vertex (they were 17 and 32 cm before 2026-11-29 and folded fitted necks)
    h36m = dict(zip(get_format("h36m17").keypoint_names, _rest(get_format("h36m17"))))
    assert abs(h36m["neck_nose"][1] - j["neck"][1] - 0.12) < 1e-3 and abs(h36m["head_top"][1] - j["neck"][1] - 0.24) < 1e-3
    vertex = load_landmarks()["head_top"]
    assert face[:, 1].max() < h36m["head_top"][1] < j["head"][1] + vertex.offset[1] - 0.05


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_keypoints_ride_rigidly_on_their_joints_and_pass_gradients(name):
    fmt = get_format(name)
    torch.manual_seed(1)
    pose = (0.6 * torch.randn(3, NUM_JOINTS, 3, dtype=torch.float64)).requires_grad_()
    transl = torch.randn(3, 3, dtype=torch.float64)
    posed = FK(pose, transl)
    kp = fmt.from_posed(posed)
    assert kp.shape == (3, fmt.num_keypoints, 3)
    idx = torch.from_numpy(fmt.joints.copy())
    parents = posed.joints[:, idx]
    dist = (kp - parents).norm(dim=-1).detach().numpy()
    np.testing.assert_allclose(dist, np.broadcast_to(np.linalg.norm(fmt.offsets, axis=-1), dist.shape), atol=1e-12)
    # the offset turns with its joint: the point's position relative to the joint is R @ offset
    rel = (kp - parents).detach()
    expect = torch.einsum("bkij,kj->bki", posed.rotations[:, idx].detach(), torch.tensor(fmt.offsets))
    assert torch.allclose(rel, expect, atol=1e-12)
    kp.square().sum().backward()
    assert torch.isfinite(pose.grad).all() and pose.grad.abs().sum() > 0
    # every landmark's own joint rotation moves it
    with_offset = np.unique(fmt.joints[np.linalg.norm(fmt.offsets, axis=-1) > 0])
    assert (pose.grad[:, with_offset].abs().sum(dim=(0, 2)) > 0).all()


def test_from_posed_keeps_batch_dims_and_dtype():
    fmt = get_format("mediapipe_holistic75")
    posed = FK(torch.zeros(2, 5, NUM_JOINTS, 3), torch.ones(2, 5, 3))
    kp = fmt.from_posed(posed)
    assert kp.shape == (2, 5, 75, 3) and kp.dtype == torch.float32
    np.testing.assert_allclose(kp[1, 4].numpy(), _rest(fmt) + 1.0, atol=1e-5)


def _pairs(fmt: KeypointFormat) -> list[tuple[int, int]]:
    """(left, right) keypoint pairs: by keypoint name, else by the name of what they attach to."""
    names = list(fmt.keypoint_names)
    targets = [_target(fmt, k) for k in range(fmt.num_keypoints)]
    pairs = []
    for k, (name, target) in enumerate(zip(names, targets)):
        if "left" in name:
            pairs.append((k, names.index(_swap(name))))
        elif "left" in target and "right" not in name:
            pairs.append((k, targets.index(_swap(target))))
    return pairs


@pytest.mark.parametrize("name", ["coco17", "mediapipe33", "coco_wholebody133", "h36m17", "radar14",
                                  "mediapipe_holistic75", "smplx55", "openpose_body25", "halpe26", "zed_body18",
                                  "zed_body34", "zed_body38"])
def test_left_and_right_keypoints_are_mirror_images(name):
    """Mirror the rest body (x -> -x): each left keypoint must land on its right counterpart (< 1.5 cm).

    The SMPL-X rest joints are not exactly symmetric (elbows differ by 3 cm), so the mirror is taken
    where each keypoint is defined: a keypoint on a limb joint is compared on the mirrored skeleton
    (left and right offsets must be mirror images), a keypoint on a midline joint (head, jaw, pelvis)
    by its rest position (the face is symmetric about X = 0, the plane of the SMPL-X eye joints).
    """
    fmt = get_format(name)
    mirror = np.array([-1.0, 1.0, 1.0])
    swap = [SKEL.index(_swap(n)) for n in SKEL.names]
    kp = _rest(fmt)
    kp_of_mirrored_body = _rest(fmt, SKEL.rest_joints[swap] * mirror)
    pairs = _pairs(fmt)
    assert len(pairs) >= {"coco17": 8, "mediapipe33": 16, "coco_wholebody133": 61}.get(name, 6)
    for left, right in pairs:
        jl, jr = fmt.joints[left], fmt.joints[right]
        if jl == jr:  # midline parent
            err = np.linalg.norm(kp[left] * mirror - kp[right])
        else:
            assert SKEL.names[jr] == _swap(SKEL.names[jl]), (fmt.keypoint_names[left], fmt.keypoint_names[right])
            err = np.linalg.norm(kp[left] * mirror - kp_of_mirrored_body[right])
        assert err < 0.015, f"{name}: {fmt.keypoint_names[left]} vs {fmt.keypoint_names[right]}: {err * 100:.1f} cm"
        assert kp[left][0] > kp[right][0], "left keypoints lie at +X (the person's own left)"


# Keypoint names in the published order, copied from each definition (the YAML headers say more).
PUBLISHED = {
    # CMU-Perceptual-Computing-Lab/openpose src/openpose/pose/poseParameters.cpp POSE_BODY_25_BODY_PARTS and
    # doc/02_output.md (25, "Background", is a heatmap channel, not a keypoint)
    "openpose_body25": [
        "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip", "RHip",
        "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar", "LBigToe", "LSmallToe",
        "LHeel", "RBigToe", "RSmallToe", "RHeel",
    ],
    # Fang-Haoshu/Halpe-FullBody README.md, "Keypoints format", 26 body keypoints ("Rknee" sic)
    "halpe26": [
        "Nose", "LEye", "REye", "LEar", "REar", "LShoulder", "RShoulder", "LElbow", "RElbow", "LWrist", "RWrist",
        "LHip", "RHip", "LKnee", "Rknee", "LAnkle", "RAnkle", "Head", "Neck", "Hip", "LBigToe", "RBigToe",
        "LSmallToe", "RSmallToe", "LHeel", "RHeel",
    ],
    # stereolabs/zed-python-api src/pyzed/sl.pyx, class BODY_18_PARTS (sl::BODY_18_PARTS)
    "zed_body18": [
        "NOSE", "NECK", "RIGHT_SHOULDER", "RIGHT_ELBOW", "RIGHT_WRIST", "LEFT_SHOULDER", "LEFT_ELBOW", "LEFT_WRIST",
        "RIGHT_HIP", "RIGHT_KNEE", "RIGHT_ANKLE", "LEFT_HIP", "LEFT_KNEE", "LEFT_ANKLE", "RIGHT_EYE", "LEFT_EYE",
        "RIGHT_EAR", "LEFT_EAR",
    ],
    # stereolabs/zed-python-api src/pyzed/sl.pyx, class BODY_34_PARTS (sl::BODY_34_PARTS)
    "zed_body34": [
        "PELVIS", "NAVAL_SPINE", "CHEST_SPINE", "NECK", "LEFT_CLAVICLE", "LEFT_SHOULDER", "LEFT_ELBOW",
        "LEFT_WRIST", "LEFT_HAND", "LEFT_HANDTIP", "LEFT_THUMB", "RIGHT_CLAVICLE", "RIGHT_SHOULDER", "RIGHT_ELBOW",
        "RIGHT_WRIST", "RIGHT_HAND", "RIGHT_HANDTIP", "RIGHT_THUMB", "LEFT_HIP", "LEFT_KNEE", "LEFT_ANKLE",
        "LEFT_FOOT", "RIGHT_HIP", "RIGHT_KNEE", "RIGHT_ANKLE", "RIGHT_FOOT", "HEAD", "NOSE", "LEFT_EYE", "LEFT_EAR",
        "RIGHT_EYE", "RIGHT_EAR", "LEFT_HEEL", "RIGHT_HEEL",
    ],
    # stereolabs/zed-python-api src/pyzed/sl.pyx, class BODY_38_PARTS (sl::BODY_38_PARTS)
    "zed_body38": [
        "PELVIS", "SPINE_1", "SPINE_2", "SPINE_3", "NECK", "NOSE", "LEFT_EYE", "RIGHT_EYE", "LEFT_EAR",
        "RIGHT_EAR", "LEFT_CLAVICLE", "RIGHT_CLAVICLE", "LEFT_SHOULDER", "RIGHT_SHOULDER", "LEFT_ELBOW",
        "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST", "LEFT_HIP", "RIGHT_HIP", "LEFT_KNEE", "RIGHT_KNEE",
        "LEFT_ANKLE", "RIGHT_ANKLE", "LEFT_BIG_TOE", "RIGHT_BIG_TOE", "LEFT_SMALL_TOE", "RIGHT_SMALL_TOE",
        "LEFT_HEEL", "RIGHT_HEEL", "LEFT_HAND_THUMB_4", "RIGHT_HAND_THUMB_4", "LEFT_HAND_INDEX_1",
        "RIGHT_HAND_INDEX_1", "LEFT_HAND_MIDDLE_4", "RIGHT_HAND_MIDDLE_4", "LEFT_HAND_PINKY_1", "RIGHT_HAND_PINKY_1",
    ],
}


def _snake(published: str) -> str:
    """A published keypoint name as this package spells it: enum names in lower case (LEFT_HIP -> left_hip),
    OpenPose/Halpe names with the side spelled out and camel case split (RBigToe -> right_big_toe)."""
    if published.isupper():
        return published.lower()
    side = {"L": "left_", "R": "right_"}.get(published[0], "")
    rest = published[1:] if side else published
    return side + re.sub(r"(?<!^)(?=[A-Z])", "_", rest).lower()


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_formats_follow_their_published_order(name):
    published = PUBLISHED[name]
    assert len(published) == COUNTS[name] == len(set(published))
    assert get_format(name).keypoint_names == tuple(_snake(p) for p in published)
    assert name in known_formats()


def test_published_name_spelling():
    assert [_snake(n) for n in ("RShoulder", "MidHip", "LSmallToe", "Rknee", "Neck", "NAVAL_SPINE")] == [
        "right_shoulder", "mid_hip", "left_small_toe", "right_knee", "neck", "naval_spine"]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_new_formats_are_plausible_at_rest(name):
    """At rest (SMPL-X canonical axes: +X the person's left, +Y up), left keypoints lie left of their right
    twins, feet below the hips, the head above the shoulders, and every keypoint inside a 1.73 m body."""
    fmt = get_format(name)
    kp = dict(zip(fmt.keypoint_names, fmt.from_posed(FK(torch.zeros(1, NUM_JOINTS, 3))).numpy()[0]))
    sided = [n for n in kp if _side(n) == "left"]
    assert len(sided) >= 7
    for left in sided:
        assert kp[left][0] > kp[_swap(left)][0] + 0.01, (left, kp[left], kp[_swap(left)])
    hips = [p for n, p in kp.items() if "hip" in n.split("_")]
    feet = [p for n, p in kp.items() if {"ankle", "heel", "toe", "foot"} & set(n.split("_"))]
    head = [p for n, p in kp.items() if {"nose", "eye", "ear", "head"} & set(n.split("_"))]
    shoulders = [kp["left_shoulder"], kp["right_shoulder"]]
    assert len(hips) >= 2 and len(feet) >= 2 and len(head) >= 5
    assert max(p[1] for p in feet) < min(p[1] for p in hips) - 0.6
    assert min(p[1] for p in head) > max(p[1] for p in shoulders) + 0.1
    ys = np.array([p[1] for p in kp.values()])
    assert ys.max() - ys.min() < 1.75 and np.isfinite(ys).all()
    # the neck keypoint sits between the shoulders and the nose
    neck = kp["neck"]
    assert abs(neck[0]) < 0.03 and kp["left_shoulder"][1] - 0.01 < neck[1] < kp["nose"][1]


def test_openpose_neck_is_the_shoulder_midpoint_and_mid_hip_the_hip_midpoint():
    for name, mid_hip in (("openpose_body25", "mid_hip"), ("halpe26", "hip")):
        kp = dict(zip(get_format(name).keypoint_names, _rest(get_format(name))))
        np.testing.assert_allclose(kp[mid_hip], (kp["left_hip"] + kp["right_hip"]) / 2, atol=1e-4)  # 0.1 mm rounding
    for name in ("openpose_body25", "zed_body18"):
        kp = dict(zip(get_format(name).keypoint_names, _rest(get_format(name))))
        np.testing.assert_allclose(kp["neck"], (kp["left_shoulder"] + kp["right_shoulder"]) / 2, atol=1e-4)
    halpe = dict(zip(get_format("halpe26").keypoint_names, _rest(get_format("halpe26"))))
    assert halpe["head"][1] > halpe["nose"][1] + 0.1  # Halpe's Head is the top of the head


def test_hand_formats_are_mirror_images_and_sided():
    left, right = get_format("mediapipe_hand21_left"), get_format("mediapipe_hand21_right")
    assert left.keypoint_names == right.keypoint_names
    mirrored_body = SKEL.rest_joints[[SKEL.index(_swap(n)) for n in SKEL.names]] * [-1, 1, 1]
    np.testing.assert_allclose(_rest(left) * [-1, 1, 1], _rest(right, mirrored_body), atol=1e-4)
    assert all(SKEL.names[j].startswith("left_") for j in left.joints)
    assert set(left.parts) == {"body", "left_hand"} and set(right.parts) == {"body", "right_hand"}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_sided_keypoints_attach_to_the_same_side(name):
    fmt = get_format(name)
    own = "right" if name.endswith("_right") else "left" if name.endswith("_left") else None
    for k, kp_name in enumerate(fmt.keypoint_names):
        side, target = own or _side(kp_name), _target(fmt, k)
        if side is not None and _side(target) is not None:
            assert _side(target) == side, f"{name}: {kp_name} -> {target}"


def test_parts_come_from_the_joint_tree():
    wb = get_format("coco_wholebody133")
    parts = dict(zip(wb.keypoint_names, wb.parts))
    assert parts["left_forefinger2"] == "left_hand" and parts["right_pinky_finger4"] == "right_hand"
    assert parts["left_hand_root"] == parts["nose"] == parts["left_heel"] == "body"
    assert parts["face-8"] == parts["face-57"] == "face" and parts["face-30"] == "body"  # chin on jaw, nose on head
    assert wb.observed_parts() == {"body", "face", "left_hand", "right_hand"}
    # COCO's eyes are the SMPL-X eye joints (part "face"), but nothing moves them except the head
    coco = get_format("coco17")
    assert set(coco.parts) == {"body", "face"} and coco.observed_parts() == {"body"}
    assert get_format("radar14").observed_parts() == {"body"}
    assert get_format("mediapipe_hand21_right").observed_parts() == {"body", "right_hand"}


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(KeypointFormatError, match="unknown keypoint format 'coco18'") as err:
        get_format("coco18")
    for name in COUNTS:
        assert name in str(err.value)
    assert isinstance(err.value, ValueError)


def test_validate_checks_count_shape_and_finiteness():
    fmt = get_format("coco17")
    fmt.validate(np.zeros((17, 3)))
    fmt.validate(torch.zeros(4, 17, 3), confidences=torch.ones(4, 17))
    with pytest.raises(KeypointFormatError, match=r"^format 'coco17' expects 17 keypoints, got 18$"):
        fmt.validate(np.zeros((18, 3)))
    with pytest.raises(KeypointFormatError, match="expects 17 keypoints, got 133"):
        fmt.validate(np.zeros((2, 133, 3)))
    with pytest.raises(KeypointFormatError, match=r"shape \(17, 3\) or \(N, 17, 3\)"):
        fmt.validate(np.zeros((17, 2)))
    pts = np.zeros((3, 17, 3))
    pts[1, 9, 0] = np.nan
    pts[2, 16, 2] = np.inf
    with pytest.raises(KeypointFormatError, match=r"non-finite coordinates at keypoints left_wrist, right_ankle in 2 of"):
        fmt.validate(pts)
    conf = np.ones((3, 17))
    conf[1, 9] = conf[2, 16] = 0.0
    fmt.validate(pts, conf)  # missing keypoints, marked by zero confidence
    conf[2, 16] = 0.5
    with pytest.raises(KeypointFormatError, match="right_ankle") as err:
        fmt.validate(pts, conf)
    assert "left_wrist" not in str(err.value)
    with pytest.raises(KeypointFormatError, match=r"confidences must have shape \(3, 17\)"):
        fmt.validate(pts, np.ones(17))
    with pytest.raises(KeypointFormatError, match="finite and >= 0; bad at nose"):
        fmt.validate(np.zeros((17, 3)), np.r_[-1.0, np.ones(16)])


GOOD = "name: tiny\nkeypoints:\n  - {name: a, joint: pelvis}\n  - {name: b, landmark: nose, weight: 0.5}\n"


def test_a_custom_directory_loads(tmp_path):
    (tmp_path / "tiny.yaml").write_text(GOOD)
    (tmp_path / "tinier.yaml").write_text("name: tinier\nkeypoints:\n  - {include: tiny, prefix: x_}\n")
    formats = load_formats(tmp_path)
    assert set(formats) == {"tiny", "tinier"}
    assert formats["tinier"].keypoint_names == ("x_a", "x_b")
    np.testing.assert_array_equal(formats["tiny"].weights, [1.0, 0.5])
    np.testing.assert_array_equal(formats["tiny"].offsets[1], get_format("coco17").offsets[0])


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: bad\nkeypoints: [ {name: a, joint: pelvis\n", "not valid YAML"),
        ("name: bad\nkeypoints:\n  - {name: a, joint: lft_wrist}\n",
         r"keypoints\[0\] \(a\): unknown SMPL-X joint 'lft_wrist'; did you mean left_wrist"),
        ("name: bad\nkeypoints:\n  - {name: a, joint: pelvis}\n  - {name: b, landmark: nosetip}\n",
         r"keypoints\[1\] \(b\): unknown landmark 'nosetip'"),
        ("name: bad\nkeypoints:\n  - {name: a, joint: pelvis}\n  - {name: a, joint: neck}\n",
         "duplicate keypoint names in format 'bad': a"),
        ("name: bad\nkeypoints:\n  - {name: a, joint: pelvis, landmark: nose}\n", "exactly one of 'joint' or"),
        ("name: bad\nkeypoints:\n  - {name: a, joint: pelvis, wieght: 2}\n", r"keypoints\[0\]: expected"),
        ("name: bad\nkeypoints:\n  - {name: a, joint: pelvis, weight: -1}\n", "weight must be a finite number >= 0"),
        ("name: bad\nkeypoints:\n  - {include: nothing}\n", "includes unknown format 'nothing'"),
        ("name: bad\nkeypoints:\n  - {include: bad}\n", "include cycle bad -> bad"),
        ("name: bad\n", "needs keys 'name' and 'keypoints'"),
        ("name: tiny\nkeypoints:\n  - {name: a, joint: pelvis}\n", "format 'tiny' is already defined in .*tiny.yaml"),
    ],
)
def test_malformed_tables_are_errors_naming_the_file(tmp_path, text, message):
    (tmp_path / "tiny.yaml").write_text(GOOD)
    (tmp_path / "zz_broken.yaml").write_text(text)
    with pytest.raises(KeypointFormatError, match=message) as err:
        load_formats(tmp_path)
    assert "zz_broken.yaml" in str(err.value)


def test_malformed_landmarks_are_errors_naming_the_file(tmp_path):
    (tmp_path / "formats").mkdir()
    (tmp_path / "formats" / "tiny.yaml").write_text(GOOD)
    marks = tmp_path / "marks.yaml"
    marks.write_text("landmarks:\n  nose: {joint: hed, offset: [0, 0, 0.1]}\n")
    with pytest.raises(KeypointFormatError, match=r"marks.yaml: landmark 'nose': unknown SMPL-X joint 'hed'"):
        load_formats(tmp_path / "formats", landmarks=marks)
    marks.write_text("landmarks:\n  nose: {joint: head, offset: [0, 0]}\n")
    with pytest.raises(KeypointFormatError, match="marks.yaml: landmark 'nose': offset must be three finite numbers"):
        load_formats(tmp_path / "formats", landmarks=marks)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeypointFormatError, match="empty: no keypoint format tables"):
        load_formats(tmp_path / "empty")
