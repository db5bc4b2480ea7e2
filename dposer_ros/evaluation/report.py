"""Reports of an evaluation: a markdown table, a JSON file with everything, accuracy-against-latency plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .compare import markdown as paired_markdown
from .compare import paired
from .runner import EvalResult

COLUMNS = (  # (metric key, header, format)
    ("mpjpe_all", "MPJPE", "{:.1f}"),
    ("mpjpe_visible", "vis", "{:.1f}"),
    ("mpjpe_occluded", "occ", "{:.1f}"),
    ("pa_mpjpe", "PA-MPJPE", "{:.1f}"),
    ("accel", "accel", "{:.2f}"),
    ("hand_mpjpe", "hand", "{:.1f}"),
    ("latency_p50_ms", "p50 ms", "{:.1f}"),
    ("latency_p99_ms", "p99 ms", "{:.1f}"),
)


def _fmt(value, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return pattern.format(value)


def markdown_table(result: EvalResult) -> str:
    """Rows: corruption, method; columns: the metrics (mm, accel mm/frame^2, latency ms); then the groups, and the
    first method compared clip by clip with each other one (`compare.paired`)."""
    head = ["corruption", "format", "Hz", "method", "frames", "input"] + [h for _, h, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result.rows:
        inp = result.inputs[r.corruption]
        m = r.metrics
        cells = [r.corruption, inp["format"], f"{inp['rate_hz']:g}", r.method, str(m["frames"]),
                 _fmt(inp["input_error_mm"], "{:.1f}")]
        if r.error is not None:
            cells += [f"FAILED: {r.error}"] + [""] * (len(COLUMNS) - 1)
        else:
            cells += [_fmt(m[k], f) for k, _, f in COLUMNS]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines.append("")
    lines.append("mm unless stated. input: error of the visible input keypoints; MPJPE / vis / occ: 22 body joints, all /"
                 " visible / occluded; PA-MPJPE: similarity-aligned; accel: mm per (30 Hz frame)^2; hand: 30 finger joints"
                 " relative to their wrist; p50 / p99: per-frame latency. – = not measured (no such joints or truth).")
    lines.append("")
    lines.append("Groups (pooled over their corruptions):")
    lines.append("")
    ghead = ["group", "method", "frames"] + [h for _, h, _ in COLUMNS]
    lines += ["| " + " | ".join(ghead) + " |", "|" + "---|" * len(ghead)]
    for (g, meth), m in result.groups().items():
        lines.append("| " + " | ".join([g, meth, str(m["frames"])] + [_fmt(m[k], f) for k, _, f in COLUMNS]) + " |")
    comparison = paired(result.to_dict(), result.methods[0]) if len(result.methods) > 1 else []
    if comparison:
        lines += ["", paired_markdown(comparison, result.methods[0]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _clean(x):
    """NaN -> None, recursively, so the JSON is standard."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def plot_accuracy_latency(result: EvalResult, path: Path) -> Path | None:
    """Occluded-joint MPJPE, all-joint MPJPE (and hand MPJPE when measured) against latency p50:
    one point per method per corruption group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = result.groups()
    if not groups:
        return None
    panels = [("mpjpe_occluded", "occluded-joint MPJPE (mm)"), ("mpjpe_all", "all-joint MPJPE (mm)")]
    if any(not math.isnan(m["hand_mpjpe"]) for m in groups.values()):
        panels.append(("hand_mpjpe", "hand MPJPE, wrist-relative (mm)"))
    methods = sorted({m for _, m in groups})
    group_names = sorted({g for g, _ in groups})
    colours = plt.get_cmap("tab10")
    markers = "osD^v<>Pp*"
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        xs, ys = [], []
        for (g, meth), m in groups.items():
            x, y = m["latency_p50_ms"], m[key]
            if math.isnan(x) or math.isnan(y):
                continue
            xs.append(x)
            ys.append(y)
            ax.scatter(x, y, color=colours(methods.index(meth) % 10), marker=markers[group_names.index(g) % len(markers)],
                       s=60, label=f"{meth} / {g}")
            ax.annotate(g, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.set_xlabel("latency p50 per frame (ms)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if xs:
            if max(xs) / max(min(xs), 1e-9) > 20:  # fast and slow methods together: log scale
                ax.set_xscale("log")
                ax.set_xlim(min(xs) / 1.5, max(xs) * 1.5)
            else:
                ax.set_xlim(0, max(xs) * 1.2)
            ax.set_ylim(0, max(ys) * 1.2)
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle("accuracy against latency (one point per method per corruption group)")
    fig.tight_layout(rect=(0, 0.08 + 0.03 * (len(labels) // 4), 1, 0.95))
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(result: EvalResult, out: Path, extra: dict | None = None) -> dict[str, Path]:
    """Write results.md, results.json and accuracy_latency.png into `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table": out / "results.md", "json": out / "results.json"}
    paths["table"].write_text(markdown_table(result))
    payload = {**(extra or {}), **result.to_dict()}
    if len(result.methods) > 1:
        payload["paired"] = {"reference": result.methods[0], "rows": paired(payload, result.methods[0])}
    paths["json"].write_text(json.dumps(_clean(payload), indent=1))
    plot = plot_accuracy_latency(result, out / "accuracy_latency.png")
    if plot is not None:
        paths["plot"] = plot
    return paths
