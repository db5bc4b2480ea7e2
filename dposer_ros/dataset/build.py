"""`dposer data build`: retarget every source of shared/data/mocap and write the versioned SMPL-X pose dataset."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from ..body.skeleton import NUM_JOINTS
from ..retarget.fit import FitSettings
from ..retarget.pipeline import TakeResult, retarget_source
from ..retarget.sources import find_takes, load_sources
from .poses import PARTS, save_dataset
from .split import SPLITS, split_takes


@dataclass(frozen=True)
class BuildConfig:
    """Settings of a dataset build (config/data/build.yaml)."""

    version: int = 1
    fps: float = 30.0
    segment_frames: int = 300
    max_fit_error_mm: float = 40.0
    sources: tuple[str, ...] = ("bandai", "hdm05", "reactidle", "cmu", "manipnet_hands")
    split: dict = field(default_factory=lambda: {"salt": "dposer-split-v1", "val": 0.1, "test": 0.1})
    fit: FitSettings = FitSettings()
    drop_targets: dict = field(default_factory=dict)  # source -> SMPL-X joints left out of its data term

    @classmethod
    def from_yaml(cls, path: Path) -> BuildConfig:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(raw) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
        known = load_sources()
        missing = [s for s in raw.get("sources", ()) if s not in known]
        if missing:
            raise ValueError(f"{path}: unknown sources {missing}; known: {sorted(known)}")
        fit = FitSettings(**raw.pop("fit", {}))
        for source, joints in raw.get("drop_targets", {}).items():
            if source not in known:
                raise ValueError(f"{path}: drop_targets names unknown source {source!r}; known: {sorted(known)}")
            mapped = {j for rig in known[source].rigs for j in rig.targets}
            if set(joints) - mapped:
                raise ValueError(f"{path}: drop_targets of {source} names joints it does not map: "
                                 f"{sorted(set(joints) - mapped)}; it maps {sorted(mapped)}")
        if "sources" in raw:
            raw["sources"] = tuple(raw["sources"])
        return cls(**raw, fit=fit)


@dataclass
class SourceReport:
    """What the build did with one source."""

    source: str
    licence: str
    takes: int = 0
    frames: int = 0
    frames_kept: int = 0
    fit_error_mm: dict = field(default_factory=dict)  # mean / p95 over matched joints of all fitted frames
    raw_error_mm: dict = field(default_factory=dict)
    seconds: float = 0.0


def _stats(errors_m: list[np.ndarray]) -> dict:
    e = np.concatenate([x.ravel() for x in errors_m]) * 1000.0
    return {"mean": round(float(e.mean()), 2), "p95": round(float(np.percentile(e, 95)), 2)}


def build_dataset(
    mocap_dir: Path,
    config: BuildConfig,
    out_path: Path,
    max_takes: int | None = None,
) -> tuple[list[SourceReport], dict[str, list[TakeResult]]]:
    """Retarget the configured sources and write the dataset to `out_path` (.npz). `max_takes` limits takes per source
    (evenly spread over the sorted takes), for quick checks."""
    specs = load_sources()
    results: dict[str, list[TakeResult]] = {}
    reports = []
    for name in config.sources:
        spec = specs[name].without_targets(config.drop_targets.get(name, ()))
        takes = find_takes(spec, mocap_dir)
        if not takes:
            raise FileNotFoundError(f"no takes of source {name} under {mocap_dir / name}")
        if max_takes is not None and len(takes) > max_takes:
            takes = [takes[i] for i in np.linspace(0, len(takes) - 1, max_takes).round().astype(int)]
        start = time.perf_counter()
        with tqdm(desc=f"retarget {name} ({len(takes)} takes)", unit="step", leave=False) as bar:
            res = retarget_source(spec, takes, config.fit, config.fps, config.segment_frames, bar.update)
        report = SourceReport(name, spec.licence, takes=len(res), frames=sum(len(r.pose) for r in res))
        report.fit_error_mm = _stats([r.fit_error for r in res])
        report.raw_error_mm = _stats([r.raw_error for r in res])
        report.seconds = round(time.perf_counter() - start, 1)
        results[name] = res
        reports.append(report)
        tqdm.write(f"{name}: {report.takes} takes, {report.frames} frames, fit error {report.fit_error_mm} mm "
                   f"({report.seconds} s)")

    all_results = [r for name in config.sources for r in results[name]]
    take_ids = [r.take.take_id for r in all_results]
    split = split_takes(take_ids, [r.take.source for r in all_results], config.split["val"], config.split["test"],
                        config.split["salt"])
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in ("pose", "transl", "part_mask", "source", "take", "frame", "fit_error_mm")}
    for t, r in enumerate(all_results):
        keep = r.fit_error.mean(axis=1) * 1000.0 <= config.max_fit_error_mm
        n = int(keep.sum())
        next(rep for rep in reports if rep.source == r.take.source).frames_kept += n
        mask = np.array([p in r.parts for p in PARTS])
        arrays["pose"].append(r.pose[keep])
        arrays["transl"].append(r.transl[keep])
        arrays["part_mask"].append(np.broadcast_to(mask, (n, len(PARTS))))
        arrays["source"].append(np.full(n, config.sources.index(r.take.source), np.int16))
        arrays["take"].append(np.full(n, t, np.int32))
        arrays["frame"].append(np.flatnonzero(keep).astype(np.int32))
        arrays["fit_error_mm"].append((r.fit_error[keep].mean(axis=1) * 1000.0).astype(np.float32))
    data = {k: np.concatenate(v) for k, v in arrays.items()}
    data["pose"] = data["pose"].astype(np.float32).reshape(-1, NUM_JOINTS, 3)
    meta = {
        "version": config.version,
        "fps": config.fps,
        "sources": list(config.sources),
        "takes": take_ids,
        "take_split": split,
        "licences": {r.source: r.licence for r in reports},
        "config": {**asdict(config), "fit": asdict(config.fit)},
        "reports": [asdict(r) for r in reports],
        "max_takes": max_takes,
    }
    save_dataset(out_path, data, meta)
    counts = {s: int(sum(len(all_results[t].pose) for t, sp in enumerate(split) if sp == s)) for s in SPLITS}
    tqdm.write(f"wrote {out_path}: {len(data['pose'])} frames; frames per split before filtering {counts}")
    return reports, results
