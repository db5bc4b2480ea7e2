"""Where the package's configuration and shared data live, in a source checkout or an installed package."""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[1]


def config_path(relative: str) -> Path:
    """A file of the `config/` folder: the source checkout's, else the installed share/dposer_ros/config."""
    for root in (_CHECKOUT / "config", Path(sys.prefix) / "share" / "dposer_ros" / "config"):
        if (root / relative).is_file():
            return root / relative
    raise FileNotFoundError(f"config file {relative} not found in {_CHECKOUT / 'config'} or the installed share folder")


def default_mocap_dir() -> Path:
    """shared/data/mocap beside the checkout (where CI and the developers keep it)."""
    return _CHECKOUT.parent / "shared" / "data" / "mocap"


def default_engine_dir() -> Path:
    """Where exported and compiled files are cached (ONNX, TensorRT engines, solver packages): $DPOSER_ENGINE_DIR,
    else the checkout's models/engines (when writable), else ~/.cache/dposer_ros/engines."""
    if os.environ.get("DPOSER_ENGINE_DIR"):
        return Path(os.environ["DPOSER_ENGINE_DIR"])
    checkout = _CHECKOUT / "models"
    if checkout.is_dir() and os.access(checkout, os.W_OK):
        return checkout / "engines"
    return Path.home() / ".cache" / "dposer_ros" / "engines"


@functools.cache
def sources_sha256(sources: tuple[str, ...]) -> str:
    """sha256 of the package's source files `sources` (paths inside dposer_ros/, in order): part of the key of a
    graph compiled or exported from them, which changes with their code."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for source in sources:
        digest.update((root / source).read_bytes())
    return digest.hexdigest()
