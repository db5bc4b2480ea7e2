"""Deterministic train/val/test split by whole takes, with every source in every split."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

SPLITS = ("train", "val", "test")


def take_hash(take_id: str, salt: str) -> float:
    """A stable number in [0, 1) for a take id."""
    digest = hashlib.sha256(f"{salt}:{take_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_takes(take_ids: Sequence[str], sources: Sequence[str], val: float, test: float, salt: str) -> list[str]:
    """Assign each take to train/val/test by its hash. A source left without one of the splits gets there the
    lowest-hash take of its largest split, so every source is in every split (sources need at least three takes)."""
    if not (0 <= val and 0 <= test and val + test < 1):
        raise ValueError(f"val ({val}) and test ({test}) fractions must be >= 0 and sum to less than 1")
    h = [take_hash(t, salt) for t in take_ids]
    split = ["test" if x < test else "val" if x < test + val else "train" for x in h]
    for source in sorted(set(sources)):
        mine = sorted((h[i], i) for i, s in enumerate(sources) if s == source)
        if len(mine) < len(SPLITS):
            raise ValueError(f"source {source} has {len(mine)} takes; at least {len(SPLITS)} are needed to split it")
        for wanted in ("test", "val", "train"):
            members = {name: [i for _, i in mine if split[i] == name] for name in SPLITS}
            if not members[wanted]:
                donor = max(SPLITS, key=lambda name: len(members[name]))
                split[members[donor][0]] = wanted
    return split
