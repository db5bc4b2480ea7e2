"""The evaluation runner: stream every clip through every method under every corruption, and pool the metrics.

Order of work: for each corruption, for each of its clips, the corrupted stream is generated ONCE (seeded by
crc32 of "<seed>/<corruption>/<clip>"), then each method refines it frame by frame in clip order: the first
emitted frame cold (init None), each later one warm-started from that method's own previous answer
(`refined.select(0)`: pose, translation and per-joint hidden frames). Only the emitted frames are refined (radar: every 3rd frame) and
only they are scored. Every method therefore sees bit-identical inputs, and a result does not depend on which
other methods or corruptions were run.

A method that cannot be built for a format, raises, or returns non-finite joints is recorded as failed for that
corruption (with the error) and the run goes on with the others.
"""

from __future__ import annotations

import hashlib
import time
import traceback
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..body import ForwardKinematics
from ..keypoints import KeypointFormat
from ..sensors import Corrupted, Corruption
from ..solvers.types import BodyState, Observation, Refined
from .clips import Clip
from .metrics import Pool

Solver = Callable[[Observation, BodyState | None], Refined]
MethodFactory = Callable[[KeypointFormat], Solver]


def stream_seed(seed: int, corruption: str, clip: str) -> int:
    """The generator seed of one corrupted stream (stable across runs, Python versions and method sets)."""
    return zlib.crc32(f"{seed}/{corruption}/{clip}".encode())


@dataclass
class Row:
    """One (corruption, method) result."""

    corruption: str
    group: str
    method: str
    pool: Pool = field(default_factory=Pool)
    clips: list[dict] = field(default_factory=list)  # per-clip summaries
    error: str | None = None

    @property
    def metrics(self) -> dict[str, float]:
        return self.pool.summary()

    def to_dict(self) -> dict:
        return {"corruption": self.corruption, "group": self.group, "method": self.method, "error": self.error,
                "metrics": self.metrics, "clips": self.clips}


@dataclass
class EvalResult:
    rows: list[Row]
    inputs: dict[str, dict]  # corruption -> input statistics (identical for every method)
    clips: list[Clip]
    corruptions: list[Corruption]
    methods: list[str]
    seed: int
    streams: dict[tuple[str, str], Corrupted] = field(default_factory=dict, repr=False)  # (corruption, clip) -> inputs

    def row(self, corruption: str, method: str) -> Row:
        for r in self.rows:
            if r.corruption == corruption and r.method == method:
                return r
        raise KeyError(f"no result for corruption {corruption!r} and method {method!r}")

    def groups(self) -> dict[tuple[str, str], dict]:
        """(group, method) -> metrics pooled over the group's corruptions (failed rows left out)."""
        pools: dict[tuple[str, str], Pool] = {}
        for r in self.rows:
            if r.error is None:
                pools.setdefault((r.group, r.method), Pool()).merge(r.pool)
        return {k: p.summary() for k, p in pools.items()}

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "methods": self.methods,
            "corruptions": [c.to_dict() for c in self.corruptions],
            "clips": [c.describe() for c in self.clips],
            "inputs": self.inputs,
            "results": [r.to_dict() for r in self.rows],
            "groups": [{"group": g, "method": m, "metrics": s} for (g, m), s in self.groups().items()],
        }


def run_stream(solver: Solver, fmt: KeypointFormat, data: Corrupted, up: tuple[float, float, float] | None = None,
               floor: float | None = None, fps: float = 30.0,
               noise: float | None = None) -> tuple[list[Refined], list[float]]:
    """Refine a corrupted stream frame by frame (warm-started; `up`: the frame's up direction where known, `floor`
    the floor's height along it; `fps` the clip's frame rate, which with `data.frames` gives each frame's interval;
    `noise` the sensor's stated keypoint noise in metres, None: not told) -> one `Refined` per frame, per-frame
    seconds."""
    state: BodyState | None = None
    outs, seconds = [], []
    up_t = None if up is None else torch.tensor(up, dtype=torch.float32)
    floor_t = None if floor is None else torch.tensor(floor, dtype=torch.float32)
    for i in range(data.points.shape[0]):
        interval = None if i == 0 else torch.tensor(float(data.frames[i] - data.frames[i - 1]) / fps)
        obs = Observation(data.points[i : i + 1].clone(), data.confidence[i : i + 1].clone(), fmt, up_t, floor_t,
                          interval, None if noise is None else torch.tensor(noise))
        start = time.perf_counter()
        out = solver(obs, state)
        seconds.append(time.perf_counter() - start)
        if not torch.isfinite(out.joints).all():
            raise FloatingPointError(f"non-finite joints at emitted frame {i}")
        state = out.select(0)
        outs.append(out)
    return outs, seconds


def _describe(err: Exception) -> str:
    """'Type: message (at file:line)' of the innermost frame, to find a failing method's bug from the report."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {frames[-1].filename.split('dposer_ros/')[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {err}{where}"


def _input_stats(truth: torch.Tensor, data: Corrupted) -> dict:
    err = (data.points.double() - truth[data.frames].double()).norm(dim=-1)[data.visible]
    return {"sum": float(err.sum()), "count": int(err.numel()), "keypoints": int(data.visible.numel()),
            "sigma_cm": data.sigma_cm, "limb": data.limb, "frames": int(data.frames.numel()),
            "sha1": hashlib.sha1(torch.cat([data.points.nan_to_num(-1e6).flatten(), data.confidence.flatten()])
                                 .numpy().tobytes()).hexdigest()[:16]}


def evaluate(methods: dict[str, MethodFactory], corruptions: Iterable[Corruption] | dict[str, Corruption],
             clips: list[Clip], seed: int = 0, progress: bool = True, keep_streams: bool = False,
             tell_noise: bool = True) -> EvalResult:
    """Run every method on every corruption of its clips (see the module docstring); `tell_noise`: each stream
    tells its solvers the sensor's stated noise (`Corruption.stated_noise_m`: the keypoint filter)."""
    corruptions = list(corruptions.values() if isinstance(corruptions, dict) else corruptions)
    fk = ForwardKinematics()
    solvers: dict[tuple[str, str], Solver | Exception] = {}
    rows: list[Row] = []
    inputs: dict[str, dict] = {}
    streams: dict[tuple[str, str], Corrupted] = {}
    todo = [(c, [clip for clip in clips if clip.kind == c.clips]) for c in corruptions]
    bar = tqdm(total=sum(len(cl) for _, cl in todo), unit="clip", desc="eval", disable=not progress)
    for cor, cor_clips in todo:
        fmt = cor.format
        current = {m: Row(cor.name, cor.group, m) for m in methods}
        stats: dict[str, Any] = {"clips": [], "sum": 0.0, "count": 0, "keypoints": 0}
        for clip in cor_clips:
            bar.set_postfix_str(cor.name)
            truth = clip.keypoint_truth(fmt, fk)
            data = cor.apply_keypoints(truth, stream_seed(seed, cor.name, clip.name))
            if keep_streams:
                streams[(cor.name, clip.name)] = data
            s = _input_stats(truth, data)
            for stat in ("sum", "count", "keypoints"):
                stats[stat] += s.pop(stat)
            stats["clips"].append({"clip": clip.name, **s})
            for name, factory in methods.items():
                row = current[name]
                if row.error is not None:
                    continue
                key = (name, fmt.name)
                if key not in solvers:
                    try:
                        solvers[key] = factory(fmt)
                    except Exception as err:  # a method may not support a format, or fail to load
                        solvers[key] = err
                solver = solvers[key]
                if isinstance(solver, Exception):
                    row.error = f"could not build for format {fmt.name}: {_describe(solver)}"
                    continue
                try:
                    outs, seconds = run_stream(solver, fmt, data, clip.up, clip.floor, cor.fps,
                                               cor.stated_noise_m if tell_noise else None)
                except Exception as err:
                    row.error = f"failed on clip {clip.name}: {_describe(err)}"
                    continue
                pool = clip.score(fmt, data, outs, seconds, cor.stride, fk)
                row.pool.merge(pool)
                row.clips.append({"clip": clip.name, **pool.summary()})
            bar.update(1)
        inputs[cor.name] = {
            "format": fmt.name, "rate_hz": cor.rate_hz,
            "input_error_mm": stats["sum"] / stats["count"] * 1000.0 if stats["count"] else float("nan"),
            "visible_fraction": stats["count"] / stats["keypoints"] if stats["keypoints"] else float("nan"),
            "clips": stats["clips"],
        }
        rows.extend(current.values())
    bar.close()
    return EvalResult(rows, inputs, list(clips), corruptions, list(methods), seed, streams)
