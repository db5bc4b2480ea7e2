"""Reading model files, checked once for every model this package loads (prior, completion, VAE, GMM): the file
exists and is readable without running code (`weights_only`), carries the expected format tag, its vectors have
the expected size and are finite, and its weights fit the network its settings describe. Every failure is a
`CheckpointError` that names the file and what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

M = TypeVar("M", bound=torch.nn.Module)


class CheckpointError(ValueError):
    """A model file is missing, unreadable, of another kind, or inconsistent."""


def read_checkpoint(path: Path, what: str, hint: str, fmt: str | None = None) -> dict[str, Any]:
    """The payload (a dict) of a torch file. `what` names the model in messages, `hint` how to make one; `fmt`:
    the `format` tag the payload must carry (None: no tag, files from before tags)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found ({hint})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path} is not a readable checkpoint ({what}; {type(err).__name__}: {err})") from err
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not a {what} (a {type(payload).__name__}, expected a dict)")
    if fmt is not None and payload.get("format") != fmt:
        raise CheckpointError(f"{path}: not a {what} (format {payload.get('format')!r}, expected {fmt!r})")
    return payload


def read_arrays(path: Path, what: str, hint: str) -> dict[str, np.ndarray]:
    """The arrays of a numpy .npz model file (no pickles)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found ({hint})")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as err:  # zipfile / numpy raise many types for corrupt files
        raise CheckpointError(f"{path} is not a readable model file ({what}; {type(err).__name__}: {err})") from err


def finite_vector(payload: dict[str, Any], key: str, size: int, path: Path) -> torch.Tensor:
    """payload[key] as a tensor of `size` finite numbers."""
    value = payload.get(key)
    if not isinstance(value, torch.Tensor) or value.shape != (size,) or not torch.isfinite(value).all():
        raise CheckpointError(f"{path}: '{key}' must be {size} finite numbers")
    return value


def load_network(cls: type[M], config: Any, state: Any, path: Path) -> M:
    """`cls(**config)` with the weights `state`, in eval mode."""
    try:
        net = cls(**config)
        net.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{path}: network weights do not match its settings ({err})") from err
    return net.eval()
