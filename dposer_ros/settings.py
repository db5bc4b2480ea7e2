"""Reading solver settings dataclasses from YAML files, rejecting unknown keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import yaml

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def load_settings(cls: type[T], path: Path | None = None, **overrides) -> T:
    """An instance of the settings dataclass `cls` from YAML `path` (None: the defaults), then `overrides`."""
    raw = {} if path is None else (yaml.safe_load(Path(path).read_text()) or {})
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = (set(raw) | set(overrides)) - fields
    if unknown:
        raise ValueError(f"{path or cls.__name__}: unknown settings {sorted(unknown)}; known: {sorted(fields)}")
    return cls(**{**raw, **overrides})
