"""Where the package's configuration and shared data live, in a source checkout or an installed package."""

from __future__ import annotations

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
