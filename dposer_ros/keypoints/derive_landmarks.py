"""Maintainer tool: derive `landmarks.yaml` from the SMPL-X neutral rest skeleton and anthropometry.

    python -m dposer_ros.keypoints.derive_landmarks > dposer_ros/keypoints/landmarks.yaml

The runtime reads only `landmarks.yaml`; `tests/test_keypoints.py` checks that the shipped file is
exactly what this derivation prints, so edit the numbers here and regenerate.

Two ways of defining a landmark (all joint frames are the identity at rest, so a rest-pose world
vector *is* the offset in the parent joint's frame):
  * face and trunk landmarks on midline joints (head, jaw, pelvis, spine1) are placed at rest-pose
    world positions, symmetric about the body's plane X = 0 (the plane the SMPL-X eye and hand joints
    are exactly symmetric about), and the offset is `position - rest[parent]`;
  * limb landmarks (feet, fingertips) are offsets in the left joint's frame; the right one is the
    same offset with X negated, attached to the mirrored joint.
"""

from __future__ import annotations

import numpy as np

from dposer_ros.body import smplx_neutral

SKEL = smplx_neutral()
REST = SKEL.rest_joints


def _j(name: str) -> np.ndarray:
    return REST[SKEL.index(name)]


def _swap(name: str) -> str:
    return name.replace("left", "\0").replace("right", "left").replace("\0", "right")


def _mirror(v: np.ndarray) -> np.ndarray:
    return np.array([-v[0], v[1], v[2]])


EYE_Y = float(_j("left_eye_smplhf")[1])  # eye line (eyeball centres), 0.3108 m
GROUND_Y = -1.305  # assumed floor: ankle joints ~7.8 cm, foot (MTP) joints ~2 cm above it

# Foot axis: ankle -> foot joint projected on the floor points ~20 deg outwards at rest
# (left 21.8 deg, right 18.1 deg); both feet use 20 deg so left and right stay mirror images.
_TOE_OUT = np.deg2rad(20.0)
FOOT_FWD = np.array([np.sin(_TOE_OUT), 0.0, np.cos(_TOE_OUT)])  # left foot, forward
FOOT_LAT = np.array([np.cos(_TOE_OUT), 0.0, -np.sin(_TOE_OUT)])  # left foot, lateral (+X side)

FINGERTIP_RATIO = 0.9  # tip distance beyond joint3 as a fraction of the joint2 -> joint3 segment


class _Table:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: set[str] = set()

    def section(self, title: str) -> None:
        self.lines += ["", f"  # --- {title} ---"]

    def add(self, name: str, joint: str, offset: np.ndarray, note: str) -> None:
        assert name not in self.names, name
        self.names.add(name)
        off = ", ".join(f"{v:.4f}" for v in np.round(offset, 4) + 0.0)
        self.lines.append(f"  {name}: {{joint: {joint}, offset: [{off}]}}  # {note}")

    def at(self, name: str, joint: str, pos, note: str) -> None:
        """A landmark at rest world position `pos` (metres)."""
        self.add(name, joint, np.asarray(pos, dtype=float) - _j(joint), note)

    def pair_at(self, left: str, joint: str, pos, note: str) -> None:
        """A left landmark at `pos` and its right twin at the position mirrored about X = 0."""
        pos = np.asarray(pos, dtype=float)
        self.at(left, joint, pos, note)
        self.at(_swap(left), _swap(joint), _mirror(pos), f"mirror of {left} about X = 0")

    def pair_offset(self, left: str, joint: str, offset, note: str) -> None:
        """A left landmark at `offset` in `joint`'s frame and its right twin with X negated."""
        offset = np.asarray(offset, dtype=float)
        self.add(left, joint, offset, note)
        self.add(_swap(left), _swap(joint), _mirror(offset), f"mirror of {left} (offset X negated)")


def _head(t: _Table) -> None:
    e = EYE_Y
    t.section("head: nose, ears, head top/centre (parent head; world positions, X = 0 midline)")
    t.at("nose", "head", [0, e - 0.032, 0.104],
         "approximate: pronasale 3.2 cm below the eye line, 3 cm ahead of the corneas (eyeball centres + 1.2 cm)")
    t.pair_at("left_ear", "head", [0.073, e - 0.022, -0.012],
              "approximate: outer ear at the tragus, head breadth ~15 cm, 11.6 cm behind the nose tip")
    t.at("head_top", "head", [0, e + 0.115, 0.005],
         "approximate: vertex 11.5 cm above the eye line (head ~23 cm tall); with the floor at -1.305, 1.73 m tall")
    t.at("head_center", "head", [0, e - 0.005, 0.005],
         "approximate: centre of the head volume, between the ears, for sensors that see the head as one blob")
    neck = _j("neck")[1]
    t.at("h36m_neck_nose", "head", [0, neck + 0.12, 0.03],
         "approximate: Human3.6M 'Neck/Nose', 12 cm above its thorax (the SMPL-X neck joint), as in its skeleton")
    t.at("h36m_head", "head", [0, neck + 0.24, 0.005],
         "approximate: Human3.6M 'Head', 24 cm above its thorax, as in its skeleton (below the vertex, head_top)")


def _eyes(t: _Table) -> None:
    e = EYE_Y
    t.section("eye contours (iBUG 300-W points 36-47; parent head). Pupils are the SMPL-X eye joints at x = +-0.0316")
    t.pair_at("left_eye_inner", "head", [0.016, e, 0.070],
              "approximate: inner canthus, intercanthal width 3.2 cm, 0.4 cm behind the cornea")
    t.pair_at("left_eye_upper_inner", "head", [0.026, e + 0.0055, 0.0735], "approximate: upper lid, inner third")
    t.pair_at("left_eye_upper_outer", "head", [0.036, e + 0.0055, 0.070], "approximate: upper lid, outer third")
    t.pair_at("left_eye_outer", "head", [0.046, e + 0.002, 0.056],
              "approximate: outer canthus, eye fissure 3 cm wide, 1.8 cm behind the cornea")
    t.pair_at("left_eye_lower_outer", "head", [0.036, e - 0.004, 0.070], "approximate: lower lid, outer third")
    t.pair_at("left_eye_lower_inner", "head", [0.026, e - 0.004, 0.0735], "approximate: lower lid, inner third")


def _brows_nose(t: _Table) -> None:
    e = EYE_Y
    t.section("eyebrows (300-W 17-26, 1 = outer end), brow surface depth z = 0.093 - 12 x^2; parent head")
    for k, (x, dy) in enumerate([(0.056, 0.016), (0.046, 0.023), (0.035, 0.026), (0.024, 0.025), (0.013, 0.021)], 1):
        t.pair_at(f"left_brow_{k}", "head", [x, e + dy, 0.093 - 12 * x * x],
                  "approximate: arched brow ~2-2.6 cm above the pupils")
    t.section("nose (300-W 27-35; 30 is `nose`); parent head")
    for k, (dy, z) in enumerate([(0.008, 0.083), (-0.006, 0.089), (-0.019, 0.096)], 1):
        t.at(f"nose_bridge_{k}", "head", [0, e + dy, z], "approximate: nasal ridge from the nasion down to the tip")
    t.pair_at("left_nose_wing", "head", [0.017, e - 0.041, 0.083], "approximate: alar base, nose 3.4 cm wide")
    t.pair_at("left_nostril", "head", [0.008, e - 0.044, 0.090], "approximate: nostril, halfway to the midline")
    t.at("subnasale", "head", [0, e - 0.046, 0.088], "approximate: subnasale 1.4 cm below and 1.6 cm behind the tip")


def _mouth_jaw(t: _Table) -> None:
    e = EYE_Y
    t.section("mouth (300-W 48-67). Upper lip rides on the skull (head), corners and lower lip on the jaw")
    t.at("upper_lip_top", "head", [0, e - 0.058, 0.091], "approximate: labrale superius, upper lip 1.2 cm tall")
    t.pair_at("left_upper_lip_1", "head", [0.007, e - 0.057, 0.090], "approximate: peak of the cupid's bow")
    t.pair_at("left_upper_lip_2", "head", [0.016, e - 0.061, 0.085], "approximate: upper lip, halfway to the corner")
    t.at("inner_upper_lip", "head", [0, e - 0.064, 0.089], "approximate: inner upper lip, closed mouth")
    t.pair_at("left_inner_upper_lip", "head", [0.010, e - 0.065, 0.087], "approximate: inner upper lip")
    t.pair_at("mouth_left", "jaw", [0.025, e - 0.066, 0.077],
              "approximate: mouth corner, mouth 5 cm wide, stomion 6.6 cm below the eye line")
    t.pair_at("left_inner_mouth", "jaw", [0.021, e - 0.066, 0.080], "approximate: inner mouth corner")
    t.pair_at("left_inner_lower_lip", "jaw", [0.010, e - 0.068, 0.085], "approximate: inner lower lip")
    t.at("inner_lower_lip", "jaw", [0, e - 0.068, 0.087], "approximate: inner lower lip, closed mouth")
    t.pair_at("left_lower_lip_2", "jaw", [0.017, e - 0.072, 0.083], "approximate: lower lip, halfway to the corner")
    t.pair_at("left_lower_lip_1", "jaw", [0.008, e - 0.076, 0.087], "approximate: lower lip")
    t.at("lower_lip_bottom", "jaw", [0, e - 0.077, 0.088], "approximate: labrale inferius, lower lip 1.1 cm tall")
    t.section("face contour (300-W 0-16; 1 = top, next to the ear): ellipse a = 6.8 cm, b = 10.5 cm,"
              " z = 0.076 - 11 x^2; points above the jaw joint ride on the head, the rest on the jaw")
    centre_y, a, b = e - 0.010, 0.068, 0.105
    for k in range(1, 9):
        theta = np.deg2rad((9 - k) / 8 * 90.0)
        x, y = a * np.sin(theta), centre_y - b * np.cos(theta)
        joint = "head" if y > _j("jaw")[1] else "jaw"
        t.pair_at(f"left_contour_{k}", joint, [x, y, 0.076 - 11 * x * x], "approximate: face outline")
    t.at("chin", "jaw", [0, centre_y - b, 0.076], "approximate: gnathion, 11.5 cm below the eye line (300-W point 8)")


def _trunk(t: _Table) -> None:
    hip_mid = 0.5 * (_j("left_hip") + _j("right_hip"))
    t.section("trunk (parent pelvis / spine1 / spine3)")
    t.at("hip_center", "pelvis", hip_mid,
         "exact for this skeleton: midpoint of the SMPL-X hip joints (rigid on the pelvis); H36M's root")
    # Human3.6M (VideoPose3D skeleton, subject S1): root -> hip 132.9 mm sideways, thigh 442.9 + shin 454.2 mm.
    leg = sum(np.linalg.norm(_j(c) - _j(p)) for p, c in [("left_hip", "left_knee"), ("left_knee", "left_ankle")])
    half = 0.1329 * leg / (0.4429 + 0.4542)
    t.pair_at("h36m_left_hip", "pelvis", [half, hip_mid[1], hip_mid[2]],
              f"approximate: H36M hip {half * 100:.1f} cm from the root (132.9 mm scaled by SMPL-X/H36M leg length)")
    # H36M: root -> spine 233.4 mm, spine -> thorax 257.1 mm; thorax is the SMPL-X neck joint.
    frac_y = hip_mid[1] + 233.4 / (233.4 + 257.1) * (_j("neck")[1] - hip_mid[1])
    s1, s2 = _j("spine1"), _j("spine2")
    u = (frac_y - s1[1]) / (s2[1] - s1[1])
    t.at("h36m_spine", "spine1", s1 + u * (s2 - s1),
         f"approximate: H36M 'Spine' at 233.4/490.5 of root -> thorax height, {u:.2f} of the way spine1 -> spine2")
    # OpenPose / COCO-18 'Neck' is the midpoint of the shoulders, not the base of the neck.
    shoulder_mid = 0.5 * (_j("left_shoulder") + _j("right_shoulder"))
    below = (_j("neck")[1] - shoulder_mid[1]) * 100
    t.at("shoulder_center", "spine3", shoulder_mid,
         f"exact at rest for this skeleton: midpoint of the SMPL-X shoulder joints, {below:.1f} cm below the neck"
         " joint (OpenPose 'Neck'); rides on spine3, so it does not follow shrugs")


def _feet(t: _Table) -> None:
    ankle, foot = _j("left_ankle"), _j("left_foot")
    t.section("feet; left foot axis = ankle -> foot joint on the floor, 20 deg toe-out;"
              f" floor at y = {GROUND_Y} (assumed)")
    heel = -0.060 * FOOT_FWD + np.array([0, GROUND_Y + 0.020 - ankle[1], 0])
    t.pair_offset("left_heel", "left_ankle", heel,
                  "approximate: back of the calcaneus 6 cm behind the ankle (0.23 x 25 cm foot), 2 cm above the floor")
    toe_y = np.array([0, GROUND_Y + 0.017 - foot[1], 0])
    t.pair_offset("left_big_toe", "left_foot", 0.060 * FOOT_FWD - 0.022 * FOOT_LAT + toe_y,
                  "approximate: hallux tip 6 cm beyond the MTP joint, 2.2 cm medial, 1.7 cm above the floor")
    t.pair_offset("left_small_toe", "left_foot", 0.030 * FOOT_FWD + 0.036 * FOOT_LAT + toe_y,
                  "approximate: fifth toe tip, 3.6 cm lateral, 3 cm ahead of the foot joint")
    t.pair_offset("left_foot_index", "left_foot", 0.062 * FOOT_FWD + toe_y,
                  "approximate: second toe tip (BlazePose foot_index), on the foot axis")


def _fingertips(t: _Table) -> None:
    t.section(f"fingertips: joint3 + {FINGERTIP_RATIO} x (joint3 - joint2) in joint3's frame (right = mirror)")
    for finger in ["thumb", "index", "middle", "ring", "pinky"]:
        j2, j3 = _j(f"left_{finger}2"), _j(f"left_{finger}3")
        length = np.linalg.norm(j3 - j2)
        tip = FINGERTIP_RATIO * length * 100
        t.pair_offset(f"left_{finger}_tip", f"left_{finger}3", FINGERTIP_RATIO * (j3 - j2),
                      f"approximate: last segment {length * 100:.2f} cm, tip {tip:.2f} cm beyond")


HEADER = """\
# Virtual landmarks: points rigidly attached to one SMPL-X joint, as an offset (metres) in that
# joint's frame. At rest every joint frame is the identity, so an offset is the rest-pose vector from
# the joint to the landmark (Y up, X = the person's own left, Z forward). Keypoint format tables in
# formats/ refer to these by name.
#
# GENERATED by `python -m dposer_ros.keypoints.derive_landmarks` from the embedded SMPL-X neutral
# (betas = 0) rest skeleton; tests check this file matches, so change the derivation, not the numbers.
#
# Derivation. SMPL-X defines its own extra landmarks (nose, eyes, ears, toes, heels, fingertips) as
# single mesh vertices, but the licensed mesh is not shipped here, so none of these offsets is
# vertex-exact: each is derived from the rest joints and adult anthropometry (about a 1.73 m body,
# eye line at y = 0.3108 from the SMPL-X eye joints) and marked "approximate" unless it follows
# exactly from the joints. Expected error: ~1 cm for nose/ears/feet/fingertips, 1-2 cm for the
# 68-point face layout, which is a simple geometric face (ellipse contour, arcs, straight ridge)
# scaled to the SMPL-X head, not a fitted mean shape. With a real SMPL-X model at hand, offsets could
# be replaced by the vertex positions (`smplx` vertex ids) minus the joint, for the neutral shape.
#
# Face and trunk landmarks on midline joints (head, jaw, pelvis, spine1) are symmetric about X = 0
# (the SMPL-X eye and hand joints are exactly symmetric about it; the head joint itself sits 1.1 cm
# to the left of it, hence the small X offsets of midline points). Limb landmarks (feet, fingertips)
# are mirror images in their joint frames.
"""


def derive() -> str:
    """The text of landmarks.yaml."""
    t = _Table()
    for part in (_head, _eyes, _brows_nose, _mouth_jaw, _trunk, _feet, _fingertips):
        part(t)
    return HEADER + "\nlandmarks:" + "\n".join(t.lines) + "\n"


if __name__ == "__main__":
    print(derive(), end="")
