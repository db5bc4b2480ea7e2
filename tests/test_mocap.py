"""Tests of dposer_ros.mocap: hand-computed FK, bvhio cross-check, ASF/AMC sanity, error handling."""
from __future__ import annotations

import lzma
from pathlib import Path

import numpy as np
import pytest

from dposer_ros.mocap import (
    MocapError,
    MocapFileNotFoundError,
    find_asf,
    read_asf_amc,
    read_bvh,
    read_motion,
)
from dposer_ros.mocap.fk import euler_matrix

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MOCAP = SHARED / "data" / "mocap"
needs_data = pytest.mark.skipif(not MOCAP.is_dir(), reason=f"shared mocap data not found at {MOCAP}")

# ---------------------------------------------------------------- small hand-written files

BVH3 = """HIERARCHY
ROOT root
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT child
  {
    OFFSET 0 1 0
    CHANNELS 3 Xrotation Yrotation Zrotation
    End Site
    {
      OFFSET 0 0 2
    }
  }
}
MOTION
Frames: 3
Frame Time: 0.5
0 0 0 0 0 0 0 0 0
1 2 3 90 0 0 0 0 0
1 2 3 90 90 0 0 90 0
"""


def _write(path: Path, text: str) -> Path:
    if path.suffix == ".xz":
        with lzma.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def _replace_line(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


def test_three_joint_bvh_by_hand(tmp_path):
    m = read_bvh(_write(tmp_path / "three.bvh", BVH3))
    assert m.joint_names == ("root", "child", "child_end")
    assert m.parents.tolist() == [-1, 0, 1]
    np.testing.assert_allclose(m.offsets, [[0, 0, 0], [0, 1, 0], [0, 0, 2]])
    assert m.fps == 2.0 and m.positions.shape == (3, 3, 3)
    expected = np.array([
        # rest pose
        [[0, 0, 0], [0, 1, 0], [0, 1, 2]],
        # root at (1,2,3), Rz(90): (0,1,0) -> (-1,0,0); (0,0,2) unchanged
        [[1, 2, 3], [0, 2, 3], [0, 2, 5]],
        # root Rz(90) Rx(90) (order Z X Y): (0,1,0) -Rx-> (0,0,1) -Rz-> (0,0,1)
        # child Ry(90) then root: (0,0,2) -Ry-> (2,0,0) -Rx-> (2,0,0) -Rz-> (0,2,0)
        [[1, 2, 3], [1, 2, 4], [1, 4, 4]],
    ], dtype=float)
    np.testing.assert_allclose(m.positions, expected, atol=1e-12)
    assert m.index("child_end") == 2


def test_xz_and_plain_give_the_same(tmp_path):
    a = read_bvh(_write(tmp_path / "a.bvh", BVH3))
    b = read_motion(_write(tmp_path / "b.bvh.xz", BVH3))
    np.testing.assert_array_equal(a.positions, b.positions)


def test_several_end_sites_are_numbered(tmp_path):
    text = _replace_line(BVH3, "    End Site\n", "    End Site\n    {\n      OFFSET 1 0 0\n    }\n    End Site\n")
    m = read_bvh(_write(tmp_path / "two_ends.bvh", text))
    assert m.joint_names == ("root", "child", "child_end0", "child_end1")
    np.testing.assert_allclose(m.positions[0, 2:], [[1, 1, 0], [0, 1, 2]])


def test_index_error_lists_names(tmp_path):
    m = read_bvh(_write(tmp_path / "three.bvh", BVH3))
    with pytest.raises(KeyError, match="child_end"):
        m.index("nope")


def test_euler_matrix_matches_scipy():
    rot = pytest.importorskip("scipy.spatial.transform").Rotation
    ang = np.random.default_rng(0).uniform(-3, 3, (5, 3))
    for order in ("ZXY", "XYZ", "YXZ", "ZYX"):
        ref = rot.from_euler(order, ang).as_matrix()  # upper case = intrinsic
        np.testing.assert_allclose(euler_matrix(order, ang), ref, atol=1e-12)


ASF = """# test skeleton
:version 1.10
:name test
:units
  mass 1.0
  length 0.45
  angle deg
:documentation
  hand-written
:root
   order TX TY TZ RX RY RZ
   axis XYZ
   position 0 0 0
   orientation 0 0 0
:bonedata
  begin
     id 1
     name a
     direction 0 0 1
     length 2
     axis 0 0 0 XYZ
  end
  begin
     id 2
     name b
     direction 1 0 0
     length 1
     axis 0 0 90 XYZ
    dof rx
    limits (-180.0 180.0)
  end
:hierarchy
  begin
    root a
    a b
  end
"""
AMC = """:FULLY-SPECIFIED
:DEGREES
1
root 0 0 0 0 0 0
b 0
2
root 1 2 3 90 0 90
b 90
"""


def test_asf_amc_by_hand(tmp_path):
    asf = _write(tmp_path / "s.asf", ASF)
    m = read_asf_amc(asf, _write(tmp_path / "s_01.amc.xz", AMC), fps=60)
    assert m.joint_names == ("root", "a", "a_end", "b", "b_end")
    assert m.parents.tolist() == [-1, 0, 1, 1, 3] and m.fps == 60
    # frame 2: root M = Rz(90) Ry(0) Rx(90) (fixed axes, X first): (0,0,2) -Rx-> (0,-2,0) -Rz-> (2,0,0)
    # b: C = Rz(90), local = C Rx(90) C^-1: (1,0,0) -> (0,-1,0) -> (0,0,-1) -> (0,0,-1); then root: -Rx-> (0,1,0)
    # -Rz-> (-1,0,0)
    expected = np.array([
        [[0, 0, 0], [0, 0, 0], [0, 0, 2], [0, 0, 2], [1, 0, 2]],
        [[1, 2, 3], [1, 2, 3], [3, 2, 3], [3, 2, 3], [2, 2, 3]],
    ], dtype=float)
    np.testing.assert_allclose(m.positions, expected, atol=1e-12)
    assert find_asf(tmp_path / "s_01.amc.xz") == asf
    np.testing.assert_array_equal(read_motion(tmp_path / "s_01.amc.xz", amc_fps=60).positions, m.positions)


def test_find_asf_by_actor_prefix(tmp_path):
    for n in ("HDM_mm.asf", "HDM_tr.asf"):
        _write(tmp_path / n, ASF)
    _write(tmp_path / "HDM_tr_kick_001_120.amc.xz", AMC)
    assert find_asf(tmp_path / "HDM_tr_kick_001_120.amc.xz").name == "HDM_tr.asf"
    _write(tmp_path / "XYZ_1.amc", AMC)
    with pytest.raises(MocapError, match="XYZ_1.amc"):
        read_motion(tmp_path / "XYZ_1.amc")


# ---------------------------------------------------------------- errors


def test_missing_files(tmp_path):
    for p in (tmp_path / "none.bvh", tmp_path / "none.bvh.xz"):
        with pytest.raises(MocapFileNotFoundError, match="none.bvh"):
            read_motion(p)
        with pytest.raises(FileNotFoundError):
            read_bvh(p)
    amc = _write(tmp_path / "x_1.amc", AMC)
    with pytest.raises(MocapError, match="nope.asf"):
        read_asf_amc(tmp_path / "nope.asf", amc)


@pytest.mark.parametrize(
    "old,new,pattern",
    [
        ("1 2 3 90 90 0 0 90 0\n", "", r"bad\.bvh:\d+: truncated, 2 frame lines"),
        ("1 2 3 90 0 0 0 0 0\n", "1 2 3 90 0 0 0 0\n", r"bad\.bvh:20: frame line has 8 values"),
        ("1 2 3 90 0 0 0 0 0\n", "1 2 3 90 0 0 0 0 0 7\n", r"bad\.bvh:20: frame line has 10 values"),
        ("1 2 3 90 0 0 0 0 0\n", "1 2 3 nan 0 0 0 0 0\n", r"bad\.bvh:20: NaN/inf value in frame 1"),
        ("1 2 3 90 90 0 0 90 0\n", "1 2 3 90 inf 0 0 90 0\n", r"bad\.bvh:21: NaN/inf value in frame 2"),
        ("1 2 3 90 0 0 0 0 0\n", "1 2 3 90 x 0 0 0 0\n", r"bad\.bvh:20: non-numeric"),
        ("Xrotation Yrotation Zrotation", "Xrotation Yrotation Wrotation", r"bad\.bvh:9: unknown channel 'Wrotation'"),
        ("CHANNELS 3 Xrotation", "CHANNELS 4 Xrotation", r"bad\.bvh:9: CHANNELS says 4"),
        ("    }\n  }\n}\n", "    }\n  }\n", r"bad\.bvh:\d+: MOTION before the hierarchy is closed"),
        ("    }\n  }\n}\n", "    }\n  }\n}\n}\n", r"bad\.bvh:\d+: unbalanced '}'"),
        ("  JOINT child\n  {\n", "  JOINT child\n", r"bad\.bvh:\d+: expected '\{'"),
        ("OFFSET 0 1 0", "OFFSET 0 1", r"bad\.bvh:8: OFFSET needs 3 numbers"),
        ("OFFSET 0 1 0", "OFFSET 0 nan 0", r"bad\.bvh:8: OFFSET has a NaN/inf"),
        ("Frames: 3", "Frames: three", r"bad\.bvh:\d+: bad 'Frames:'"),
        ("HIERARCHY", "HIERARCHI", r"bad\.bvh:1: expected 'HIERARCHY'"),
    ],
)
def test_bvh_errors(tmp_path, old, new, pattern):
    with pytest.raises(MocapError, match=pattern):
        read_bvh(_write(tmp_path / "bad.bvh", _replace_line(BVH3, old, new)))


def test_bvh_error_in_xz_names_file(tmp_path):
    with pytest.raises(MocapError, match=r"bad\.bvh\.xz:\d+: truncated"):
        read_motion(_write(tmp_path / "bad.bvh.xz", BVH3.rsplit("1 2 3", 1)[0]))


def test_corrupt_and_truncated_xz(tmp_path):
    junk = tmp_path / "junk.bvh.xz"
    junk.write_bytes(b"this is not xz data at all")
    with pytest.raises(MocapError, match="junk.bvh.xz: corrupt"):
        read_motion(junk)
    good = _write(tmp_path / "good.bvh.xz", BVH3 * 20)
    cut = tmp_path / "cut.bvh.xz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(MocapError, match="cut.bvh.xz"):
        read_motion(cut)


@pytest.mark.parametrize(
    "old,new,pattern",
    [
        ("b 90\n", "c 90\n", r"s\.amc:\d+: bone 'c' is not in s\.asf"),
        ("b 90\n", "b 90 1\n", r"s\.amc:8: b has 2 values, expected 1"),
        ("b 90\n", "", r"s\.amc:6: frame 1 lacks \['b'\]"),
        ("root 1 2 3 90 0 90", "root 1 2 3 nan 0 90", r"s\.amc:6: NaN/inf value for 'root' in frame 1"),
        ("b 90\n", "b 1e999\n", r"s\.amc:6: NaN/inf value for 'b'"),
        ("b 90\n", "b 9O\n", r"s\.amc:8: non-numeric value for bone 'b'"),
    ],
)
def test_amc_errors(tmp_path, old, new, pattern):
    asf = _write(tmp_path / "s.asf", ASF)
    with pytest.raises(MocapError, match=pattern):
        read_asf_amc(asf, _write(tmp_path / "s.amc", _replace_line(AMC, old, new)))


@pytest.mark.parametrize(
    "old,new,pattern",
    [
        ("    a b\n", "    a zz\n", r"s\.asf:\d+: hierarchy names unknown bone 'zz'"),
        ("    a b\n", "", r"s\.asf: bones not connected to root: \['b'\]"),
        ("dof rx", "dof rq", r"s\.asf:\d+: unknown dof"),
        ("  angle deg", "  angle grad", r"s\.asf: unknown angle unit"),
        ("     length 2\n", "", r"s\.asf:\d+: bone without 'length'"),
    ],
)
def test_asf_errors(tmp_path, old, new, pattern):
    asf = _write(tmp_path / "s.asf", _replace_line(ASF, old, new))
    with pytest.raises(MocapError, match=pattern):
        read_asf_amc(asf, _write(tmp_path / "s.amc", AMC))


def test_unknown_suffix(tmp_path):
    with pytest.raises(MocapError, match="unknown motion format"):
        read_motion(_write(tmp_path / "x.fbx", "data"))


# ---------------------------------------------------------------- real data (shared/)

FIRST_FILES = {  # source: (first file, fps, joints incl. ends)
    "bandai": ("bandai/Bandai-Namco-Research-Motiondataset-1/data/dataset-1_bow_active_001.bvh.xz", 30, 27),
    "hdm05": ("hdm05/test/1/HDM_mm_depositFloorR_019_120.amc.xz", 120, 61),
    "reactidle": ("reactidle/acted/001_acted.bvh.xz", 24, 26),
    "cmu": ("cmu/02/02_01.bvh.xz", 120, 57),
    "manipnet_hands": ("manipnet_hands/cube_med2/leftHand.bvh.xz", 120, 22),
}


@needs_data
@pytest.mark.parametrize("source", sorted(FIRST_FILES))
def test_first_file_of_each_source(source):
    rel, fps, joints = FIRST_FILES[source]
    files = sorted(p for p in (MOCAP / source).rglob("*") if p.name.endswith((".bvh.xz", ".amc.xz")))
    assert files and files[0] == MOCAP / rel
    m = read_motion(files[0])
    assert m.fps == pytest.approx(fps, rel=1e-3)
    assert len(m.joint_names) == joints and m.positions.shape[1:] == (joints, 3)
    assert 30 <= m.num_frames <= 20000
    assert np.isfinite(m.positions).all()


def _bvh_excerpt(src: Path, dst: Path, n: int = 24) -> Path:
    """Hierarchy + ``n`` frames spread over the take, as a plain .bvh that bvhio can open."""
    lines = lzma.open(src, "rt").read().splitlines()
    k = next(i for i, s in enumerate(lines) if s.startswith("Frame Time"))
    frames = [s for s in lines[k + 1:] if s.strip()]
    pick = frames[:: max(1, len(frames) // n)][:n]
    dst.write_text("\n".join(lines[: k - 1] + [f"Frames: {len(pick)}", lines[k]] + pick) + "\n")
    return dst


@needs_data
@pytest.mark.parametrize("rel", [
    "bandai/Bandai-Namco-Research-Motiondataset-1/data/dataset-1_bow_active_001.bvh.xz",
    "bandai/Bandai-Namco-Research-Motiondataset-2/data/dataset-2_walk_normal_001.bvh.xz",
    "cmu/02/02_01.bvh.xz",  # daz rig, root Z Y X, joints Z X Y
    "cmu/16/16_01.bvh.xz",  # CMU ASF-style rig, 30 Hz
    "reactidle/acted/001_acted.bvh.xz",
    "manipnet_hands/cup1/leftHand.bvh.xz",
    "manipnet_hands/cup1/rightHand.bvh.xz",
])
def test_bvh_matches_bvhio(tmp_path, rel):
    bvhio = pytest.importorskip("bvhio")
    src = MOCAP / rel
    if not src.is_file():
        pytest.skip(f"{src} missing")
    plain = _bvh_excerpt(src, tmp_path / "excerpt.bvh")
    ours = read_bvh(plain)
    full = read_bvh(src)
    np.testing.assert_array_equal(ours.offsets, full.offsets)
    root = bvhio.readAsHierarchy(str(plain))
    joints = [j for j, _, _ in root.layout()]
    assert {j.Name for j in joints} == {n for n in ours.joint_names if not n.endswith(("_end", "_end0"))}
    scale = np.abs(ours.positions).max()
    for f in range(ours.num_frames):
        root.loadPose(f)
        ref = np.array([list(j.PositionWorld) for j in joints])
        got = ours.positions[f, [ours.index(j.Name) for j in joints]]
        np.testing.assert_allclose(got, ref, atol=2e-5 * scale)  # bvhio computes in float32


@needs_data
def test_hdm05_bone_lengths_constant_and_upright():
    m = read_motion(MOCAP / FIRST_FILES["hdm05"][0])
    p = m.positions
    for j, par in enumerate(m.parents):
        if par < 0:
            continue
        d = np.linalg.norm(p[:, j] - p[:, par], axis=-1)
        np.testing.assert_allclose(d, np.linalg.norm(m.offsets[j]), atol=1e-9, err_msg=m.joint_names[j])
    # the _end of every bone sits at its direction * length: spot-check the femur (about 7 units of inch/0.45)
    assert 5 < np.linalg.norm(m.offsets[m.index("lfemur_end")]) < 9
    f0 = p[0]
    head, root = f0[m.index("head_end"), 1], f0[m.index("root"), 1]
    toes = f0[[m.index("ltoes_end"), m.index("rtoes_end")]].mean(0)
    assert head > root > toes[1]
    body = f0[m.index("head_end")] - toes
    assert body[1] / np.linalg.norm(body) > 0.95  # Y up, standing
    assert 24 < head - f0[:, 1].min() < 34  # ~1.4-1.9 m at 0.0564 m per unit
