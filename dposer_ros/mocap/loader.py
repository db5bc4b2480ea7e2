"""``read_motion``: pick the reader from the file suffix."""
from __future__ import annotations

import os
from pathlib import Path

from .asf_amc import read_asf_amc
from .bvh import read_bvh
from .motion import MocapError, MocapFileNotFoundError, Motion, base_suffix


def find_asf(amc_path: str | os.PathLike) -> Path:
    """The ASF for an AMC clip: the single ``*.asf[.xz]`` in its folder, else the one whose
    stem (e.g. ``HDM_mm``) is the longest ``<stem>_`` prefix of the clip's file name."""
    amc_path = Path(amc_path)
    cands = sorted(p for p in amc_path.parent.glob("*") if base_suffix(p) == ".asf")
    if len(cands) == 1:
        return cands[0]
    stem = lambda p: p.name.split(".asf")[0]  # noqa: E731
    hits = [p for p in cands if amc_path.name.startswith(stem(p) + "_")]
    if hits:
        return max(hits, key=lambda p: len(stem(p)))
    raise MocapError(
        f"{amc_path}: cannot pick its ASF skeleton among {[p.name for p in cands] or 'none'}; "
        "pass asf="
    )


def read_motion(path: str | os.PathLike, asf: str | os.PathLike | None = None,
                amc_fps: float = 120.0, with_rotations: bool = False) -> Motion:
    """Read a ``.bvh[.xz]`` or ``.amc[.xz]`` take (``asf`` given or found beside the clip).

    ``with_rotations`` keeps world joint rotations too (BVH only).
    """
    path = Path(path)
    if not path.is_file():
        raise MocapFileNotFoundError(2, "no such motion file", str(path))
    suffix = base_suffix(path)
    if suffix == ".bvh":
        return read_bvh(path, with_rotations)
    if suffix == ".amc":
        return read_asf_amc(asf if asf is not None else find_asf(path), path, fps=amc_fps)
    raise MocapError(
        f"{path}: unknown motion format {suffix!r} (expected .bvh or .amc, optionally .xz)")
