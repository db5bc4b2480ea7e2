"""Sensor models: how a camera or radar pose estimator corrupts true keypoints (noise, occlusion, dropouts,
confidences, convention bias). Used alike by `dposer eval` (dposer_ros.evaluation) and the replays that feed the
node (dposer_ros.replay), so both see the same sensors."""

from .corruptions import (
    Corrupted,
    Corruption,
    CorruptionError,
    Occlusion,
    load_corruptions,
    resolve_format,
)

__all__ = ["Corrupted", "Corruption", "CorruptionError", "Occlusion", "load_corruptions", "resolve_format"]
