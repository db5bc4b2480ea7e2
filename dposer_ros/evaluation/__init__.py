"""The evaluation harness behind `dposer eval`: clips, metrics, a streaming runner, reports (the sensor corruption
models are `dposer_ros.sensors`, re-exported here).

    from dposer_ros.evaluation import evaluate, foreign_clips, load_corruptions, write_report
    clips = foreign_clips(mocap_dir, count=12, frames=40, split="val")   # truth: the source skeletons' own joints
    result = evaluate({"few_step": lambda fmt: FewStepRefiner(prior, fmt)},
                      load_corruptions(config_path("eval/corruptions_foreign.yaml")), clips, seed=0)
    # the in-house protocol (truth: this project's retargeting):
    clips = select_clips(load_dataset(path), count=12, frames=60)
    result = evaluate({"few_step": lambda fmt: FewStepRefiner(prior, fmt)}, load_corruptions(), clips, seed=0)
    write_report(result, "out/eval")
"""

from __future__ import annotations

from importlib import import_module

# names -> submodule; imported on first use, so `dposer --help` and the other commands stay fast
_WHERE = {
    "Clip": "clips", "select_clips": "clips",
    "KeypointClip": "foreign", "foreign_clips": "foreign", "load_keypoint_clips": "foreign",
    "Corrupted": ".sensors", "Corruption": ".sensors", "CorruptionError": ".sensors",
    "Occlusion": ".sensors", "load_corruptions": ".sensors", "resolve_format": ".sensors",
    "METHODS": "methods", "MethodError": "methods", "available_methods": "methods", "build_methods": "methods",
    "accel_error": "metrics", "hand_mpjpe": "metrics", "joint_visibility": "metrics", "mpjpe": "metrics",
    "pa_mpjpe": "metrics", "similarity_align": "metrics",
    "markdown_table": "report", "plot_accuracy_latency": "report", "write_report": "report",
    "EvalResult": "runner", "MethodFactory": "runner", "Row": "runner", "evaluate": "runner",
    "run_stream": "runner", "stream_seed": "runner",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METHODS",
    "Clip",
    "Corrupted",
    "KeypointClip",
    "Corruption",
    "CorruptionError",
    "EvalResult",
    "MethodError",
    "MethodFactory",
    "Occlusion",
    "Row",
    "accel_error",
    "available_methods",
    "build_methods",
    "evaluate",
    "foreign_clips",
    "hand_mpjpe",
    "joint_visibility",
    "load_keypoint_clips",
    "load_corruptions",
    "markdown_table",
    "mpjpe",
    "pa_mpjpe",
    "plot_accuracy_latency",
    "resolve_format",
    "run_stream",
    "select_clips",
    "similarity_align",
    "stream_seed",
    "write_report",
]
