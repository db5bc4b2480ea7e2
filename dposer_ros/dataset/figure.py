"""A picture of retargeted frames beside their source skeletons, one column per source."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..body.kinematics import ForwardKinematics  # noqa: E402
from ..body.render import draw_body, draw_skeleton, frame_axes  # noqa: E402
from ..body.skeleton import PART_JOINTS, smplx_neutral  # noqa: E402
from ..retarget.pipeline import TakeResult  # noqa: E402
from ..retarget.sources import load_sources, read_take  # noqa: E402


def _source_frame(result: TakeResult, frame: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Source joint positions (metres) of the first file of the take at the retargeted `frame`, and its parents."""
    motion = read_take(result.take)[0]
    skip = load_sources()[result.take.source].skip_first_frames
    k = min(skip + int(round(frame * motion.fps / fps)), motion.num_frames - 1)
    return motion.positions[k] * result.scale, motion.parents


def retarget_figure(results: dict[str, list[TakeResult]], path: Path, fps: float = 30.0) -> Path:
    """Top row: a source skeleton; bottom row: the retargeted SMPL-X body (mannequin-x) and joints."""
    fig = plt.figure(figsize=(3.2 * len(results), 7))
    fk = ForwardKinematics()
    parents = smplx_neutral().parents
    for c, (source, res) in enumerate(results.items()):
        result = max(res, key=lambda r: len(r.pose))
        frame = len(result.pose) // 2
        src, src_parents = _source_frame(result, frame, fps)
        ax = fig.add_subplot(2, len(results), c + 1, projection="3d")
        draw_skeleton(ax, src, src_parents, color="tab:blue")
        frame_axes(ax, src, f"{source}: {Path(result.take.take_id).name}\nsource frame {frame}")
        pose = torch.from_numpy(result.pose[frame])[None]
        joints = fk(pose, torch.from_numpy(result.transl[frame])[None]).joints[0].numpy()
        ax = fig.add_subplot(2, len(results), len(results) + c + 1, projection="3d")
        if "body" in result.parts:
            shown = list(range(22))
            draw_body(ax, result.pose[frame], result.transl[frame])
        else:  # a hand-only take: the captured hand's joints (the mesh would not fit the zoomed view)
            side = result.parts[0]
            shown = [20 if side == "left_hand" else 21, *PART_JOINTS[side]]
        sub_parents = [shown.index(parents[j]) if parents[j] in shown else -1 for j in shown]
        draw_skeleton(ax, joints[shown], sub_parents, color="tab:red", marker_size=4)
        frame_axes(ax, joints[shown], "SMPL-X fit", margin=0.03 if len(shown) < 22 else 0.1)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
