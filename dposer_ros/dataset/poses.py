"""The versioned SMPL-X pose dataset file: writing, validated loading, and access by split."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..body.skeleton import NUM_JOINTS
from ..paths import config_path

FORMAT_VERSION = 1
WORLD_UP = (0.0, 1.0, 0.0)  # the up direction of the poses' world: the sources' own frames are Y up (all of them)
PARTS = ("body", "left_hand", "right_hand", "face")
_FIELDS = {
    "pose": (np.float32, (NUM_JOINTS, 3)),
    "transl": (np.float32, (3,)),
    "part_mask": (np.bool_, (len(PARTS),)),
    "source": (np.int16, ()),
    "take": (np.int32, ()),
    "frame": (np.int32, ()),
    "fit_error_mm": (np.float32, ()),
}


def default_cache_dir() -> Path:
    """$DPOSER_CACHE, else $XDG_CACHE_HOME/dposer_ros, else ~/.cache/dposer_ros."""
    if os.environ.get("DPOSER_CACHE"):
        return Path(os.environ["DPOSER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dposer_ros"


def default_dataset_path(version: int | None = None) -> Path:
    """Where `dposer data build` writes dataset `version` (default: the version of config/data/build.yaml)."""
    if version is None:
        version = int(yaml.safe_load(config_path("data/build.yaml").read_text())["version"])
    return default_cache_dir() / "datasets" / f"smplx_mocap_v{version}.npz"


def save_dataset(path: Path, data: dict[str, np.ndarray], meta: dict) -> None:
    """Write arrays and metadata atomically (a half-written file never replaces a good one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    meta_array = np.array(json.dumps({**meta, "format_version": FORMAT_VERSION}))
    np.savez_compressed(tmp, meta=meta_array, **data)  # type: ignore[arg-type]  # mypy: a key of data could be allow_pickle
    tmp.replace(path)


@dataclass
class PoseDataset:
    """Frames of SMPL-X poses with per-part masks, source and take ids, and the split of each take."""

    pose: np.ndarray  # (N, 55, 3) axis-angle
    transl: np.ndarray  # (N, 3)
    part_mask: np.ndarray  # (N, 4) body, left_hand, right_hand, face
    source: np.ndarray  # (N,) index into meta["sources"]
    take: np.ndarray  # (N,) index into meta["takes"]
    frame: np.ndarray  # (N,) frame within the take at meta["fps"]
    fit_error_mm: np.ndarray  # (N,)
    meta: dict

    def __len__(self) -> int:
        return len(self.pose)

    def split_mask(self, split: str) -> np.ndarray:
        """Boolean mask of the frames whose take is in `split` (train, val or test)."""
        take_split = np.array(self.meta["take_split"])
        if split not in set(take_split):
            raise ValueError(f"unknown split {split!r}; this dataset has {sorted(set(take_split))}")
        return take_split[self.take] == split

    def subset(self, mask: np.ndarray) -> PoseDataset:
        return PoseDataset(**{f: getattr(self, f)[mask] for f in _FIELDS}, meta=self.meta)


def load_dataset(path: Path) -> PoseDataset:
    """Load and validate a dataset file written by `dposer data build`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset {path} not found: build it with `dposer data build --mocap-dir ../shared/data/mocap`")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path} is not a readable dposer dataset ({err}); rebuild it with `dposer data build`") from err
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has dataset format {meta.get('format_version')}, this version reads {FORMAT_VERSION}; rebuild it")
    n = len(arrays.get("pose", ()))
    for name, (dtype, shape) in _FIELDS.items():
        a = arrays.get(name)
        if a is None or a.dtype != dtype or a.shape != (n, *shape):
            got = None if a is None else (a.dtype, a.shape)
            raise ValueError(f"{path}: field {name} should be {np.dtype(dtype)} {(n, *shape)}, got {got}")
    if not np.isfinite(arrays["pose"]).all():
        raise ValueError(f"{path}: poses contain NaN or Inf")
    return PoseDataset(**{k: arrays[k] for k in _FIELDS}, meta=meta)
