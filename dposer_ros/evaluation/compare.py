"""Methods compared clip by clip: the mean difference of each corruption's primary error, with a bootstrap interval.

The pooled tables say which method has the lowest error on a test set; they do not say whether another draw of
clips would agree. Every method sees the same corrupted streams, so the per-clip errors are paired: the difference
reference - other is resampled over clips (percentile bootstrap, fixed seed) to give a 95 % interval. An interval
that holds zero means the clips do not separate the two methods.

    dposer compare out/eval/results.json [more results.json of the same clips] [--reference few_step]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import zlib
from pathlib import Path

import numpy as np


def primary_metric(corruption: dict, keypoint_truth: bool = False) -> str:
    """The error a corruption is judged by: hand MPJPE on hand clips with SMPL-X truth, occluded-joint (keypoint)
    MPJPE under occlusion, else MPJPE of all joints (keypoints). `corruption` is `Corruption.to_dict()`;
    `keypoint_truth`: the clips' truth is keypoints (foreign protocol, user keypoints), which has no hand MPJPE."""
    if corruption["clips"] == "hands" and not keypoint_truth:
        return "hand_mpjpe"
    if corruption["occlusion"]["kind"] != "none":
        return "mpjpe_occluded"
    return "mpjpe_all"


def keypoint_truth(result: dict) -> bool:
    """Whether a run's clips had keypoint truth (`KeypointClip.describe`: "truth": "keypoints")."""
    return any(c.get("truth") == "keypoints" for c in result.get("clips", []))


def _finite(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def merge(results: list[dict]) -> dict:
    """Results of separate `dposer eval` runs (say, a slow method run apart) as one. A corruption in several runs
    must have fed every run the same streams (the per-clip input hashes agree), else ValueError."""
    merged: dict = {"methods": [], "corruptions": [], "inputs": {}, "results": []}
    for result in results:
        for name in result["methods"]:
            if name not in merged["methods"]:
                merged["methods"].append(name)
        for cor in result["corruptions"]:
            name = cor["name"]
            streams = {c["clip"]: c["sha1"] for c in result["inputs"][name]["clips"]}
            if name not in merged["inputs"]:
                merged["corruptions"].append(cor)
                merged["inputs"][name] = {"clips": [{"clip": k, "sha1": v} for k, v in streams.items()]}
                continue
            seen = {c["clip"]: c["sha1"] for c in merged["inputs"][name]["clips"]}
            differ = [k for k in streams.keys() & seen.keys() if streams[k] != seen[k]]
            if differ:
                raise ValueError(f"corruption {name!r}: the runs fed different streams to clip {differ[0]!r} "
                                 "(another seed or corruption model); compare runs made with the same settings")
        merged["results"] += result["results"]
    return merged


def paired(result: dict, reference: str, resamples: int = 10000, seed: int = 0) -> list[dict]:
    """`result` is `EvalResult.to_dict()` (or a results.json). For every corruption and every method other than
    `reference`: clips compared, both means, mean difference (reference - other; negative: reference better), its
    95 % bootstrap interval, and the clips on which the reference is better. Clips where either method has no value
    (no occluded joint, a failed row) are left out. Also the ratio of the means (reference / other) and its
    interval."""
    metric = {c["name"]: primary_metric(c, keypoint_truth(result)) for c in result["corruptions"]}
    per_clip = {(r["corruption"], r["method"]): {c["clip"]: c.get(metric[r["corruption"]]) for c in r["clips"]}
                for r in result["results"] if r.get("error") is None}
    rows = []
    for cor in metric:
        ref = per_clip.get((cor, reference))
        if ref is None:
            continue
        for method in result["methods"]:
            other = per_clip.get((cor, method))
            if method == reference or other is None:
                continue
            clips = [k for k in ref if _finite(ref[k]) and _finite(other.get(k))]
            if not clips:
                continue
            a = np.array([ref[k] for k in clips])
            b = np.array([other[k] for k in clips])
            diff = a - b
            # resamples of its own per row: a row's interval does not depend on which other runs are compared
            rng = np.random.default_rng([seed, zlib.crc32(f"{cor}/{method}".encode())])
            pick = rng.integers(0, len(diff), (resamples, len(diff)))
            low, high = np.percentile(diff[pick].mean(1), [2.5, 97.5])
            ratio_low, ratio_high = np.percentile(a[pick].mean(1) / b[pick].mean(1), [2.5, 97.5])
            rows.append({"corruption": cor, "metric": metric[cor], "method": method, "clips": len(clips),
                         "reference_mm": float(a.mean()), "other_mm": float(b.mean()), "difference_mm": float(diff.mean()),
                         "ci95_mm": [float(low), float(high)], "ratio": float(a.mean() / b.mean()),
                         "ratio_ci95": [float(ratio_low), float(ratio_high)], "reference_better": int((diff < 0).sum())})
    return rows


def markdown(rows: list[dict], reference: str) -> str:
    """The rows of `paired` as a markdown table with a short legend."""
    lines = [f"Paired by clip against {reference} (mean of per-clip errors, mm; difference = {reference} - other, "
             f"negative: {reference} better; ratio = {reference} / other; 95 % bootstrap intervals over clips):", "",
             f"| corruption | error | other method | clips | {reference} | other | difference | 95 % interval | ratio | "
             f"95 % interval | clips {reference} better |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        low, high = r["ci95_mm"]
        verdict = " (better)" if high < 0 else " (worse)" if low > 0 else ""
        lines.append(f"| {r['corruption']} | {r['metric']} | {r['method']} | {r['clips']} | {r['reference_mm']:.1f} | "
                     f"{r['other_mm']:.1f} | {r['difference_mm']:+.1f}{verdict} | [{low:+.1f}, {high:+.1f}] | {r['ratio']:.2f} | "
                     f"[{r['ratio_ci95'][0]:.2f}, {r['ratio_ci95'][1]:.2f}] | "
                     f"{r['reference_better']}/{r['clips']} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], reference: str, path: Path) -> Path:
    """Forest plot of `paired` rows: the ratio reference / other with its 95 % interval, one line per corruption and
    method (left of 1: the reference is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    corruptions = list(dict.fromkeys(r["corruption"] for r in rows))
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(7.0, 0.5 + 0.32 * len(rows) + 0.25 * len(corruptions)))
    y, ticks, labels = 0.0, [], []
    for cor in reversed(corruptions):
        for r in reversed([r for r in rows if r["corruption"] == cor]):
            colour = colours(methods.index(r["method"]) % 10)
            low, high = r["ratio_ci95"]
            ax.errorbar(r["ratio"], y, xerr=[[r["ratio"] - low], [high - r["ratio"]]], fmt="o", color=colour,
                        capsize=3, label=r["method"])
            ticks.append(y)
            labels.append(f"{cor} vs {r['method']}")
            y += 1.0
        y += 0.6
    ax.axvline(1.0, color="grey", lw=1, ls="--")
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_xlabel(f"error ratio {reference} / other\n(mean over clips, 95 % bootstrap interval; < 1: {reference} better)")
    handles = {lab: h for h, lab in zip(*ax.get_legend_handles_labels())}
    ax.legend([handles[m] for m in methods], methods, fontsize=8, loc="best")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", type=Path, nargs="+",
                        help="results.json files of `dposer eval`, compared as one run (same seed and corruptions)")
    parser.add_argument("--reference", default="few_step", help="the method the others are compared with")
    parser.add_argument("--plot", type=Path, default=None, help="also draw the ratios and intervals into this .png")


def run(args: argparse.Namespace) -> int:
    """Print the paired comparison of the runs in `args.results`; 2 with a message when they cannot be compared."""
    try:
        result = merge([json.loads(path.read_text()) for path in args.results])
        rows = paired(result, args.reference)
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"compare: cannot compare {', '.join(map(str, args.results))}: {type(err).__name__}: {err}. "
              "Give results.json files written by `dposer eval`.", file=sys.stderr)
        return 2
    if not rows:
        print(f"compare: no corruption has per-clip results of {args.reference!r} and another method; methods: "
              f"{', '.join(result['methods'])} (choose one with --reference)", file=sys.stderr)
        return 2
    print(markdown(rows, args.reference))
    if args.plot is not None:
        print(f"plot: {plot(rows, args.reference, args.plot)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
