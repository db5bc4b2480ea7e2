"""How much a second of the upper body's motion tells about legs no keypoint sees (a probe for a temporal prior).

    python bench/leg_history_probe.py --steps 3000

On the dataset's 30 Hz body takes (train split to fit, 20,000 validation frames to score; ReActIdle, which pins
its root at the origin, and the two-hand captures left out), an MLP regresses the 8 leg joints'
rotations from:
- `frame`: the frame's other 13 body joints' rotations and the up direction in the pelvis frame (what a
  single-frame prior is given);
- `velocity`: the same and the root's velocity over 0.1 s in the pelvis frame;
- `history`: the same and, 0.1-1 s back (7 lags), the root's velocity over each lag, the root's rotation then
  relative to now and the other body joints' rotations then.
Every rotation it is given carries `--rotation-noise` rad of Gaussian error (a fitted upper body's), the root's
positions 1 cm. Scored as the knees', ankles' and feet's positions in the pelvis frame (mm). This is the dataset's
own retargeted SMPL-X bodies, not the foreign protocol: a bound on what motion could add, not a result of the
refiner (bench/eval/leg_history_probe.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
LEGS = [1, 2, 4, 5, 7, 8, 10, 11]  # SMPL-X hips, knees, ankles, feet
UPPER = [j for j in range(1, 22) if j not in LEGS]
LAGS = [3, 6, 9, 12, 15, 21, 30]  # frames at 30 Hz
LEFT_OUT = ("reactidle", "manipnet_hands")  # a root pinned at the origin; no body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps of each regressor (batch 1024)")
    parser.add_argument("--rotation-noise", type=float, default=0.08, help="rad of error on every given rotation")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "eval" / "leg_history_probe.json")
    args = parser.parse_args()
    import roma
    from tqdm.auto import tqdm

    from dposer_ros.body import ForwardKinematics
    from dposer_ros.dataset.poses import default_dataset_path, load_dataset

    torch.manual_seed(0)
    torch.set_num_threads(1)
    ds = load_dataset(default_dataset_path())
    idx = np.arange(len(ds.take))
    sources = list(ds.meta["sources"])
    ok = ds.part_mask[:, 0] & ~np.isin(ds.source, [sources.index(name) for name in LEFT_OUT])
    for lag in LAGS:
        j = np.clip(idx - lag, 0, None)
        ok &= (idx >= lag) & (ds.take[j] == ds.take) & (ds.frame - ds.frame[j] == lag)
    rotations = roma.rotvec_to_rotmat(torch.as_tensor(ds.pose[:, :22]).float())
    transl = torch.as_tensor(ds.transl).float()
    up = torch.tensor([0.0, 1.0, 0.0])

    def noisy(r: torch.Tensor) -> torch.Tensor:
        return r @ roma.rotvec_to_rotmat(torch.randn(*r.shape[:-2], 3) * args.rotation_noise / 3**0.5)

    def six(r: torch.Tensor) -> torch.Tensor:
        return r[..., :2].reshape(r.shape[0], -1)

    def features(rows: np.ndarray, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
        rows_t = torch.as_tensor(rows)
        truth = rotations[rows_t]
        now = noisy(truth)
        root_t = now[:, 0].transpose(-1, -2)
        x = [six(now[:, UPPER]), root_t @ up]
        position = transl[rows_t] + torch.randn(len(rows), 3) * 0.01 / 3**0.5
        for lag in {"frame": [], "velocity": [3], "history": LAGS}[variant]:
            then = rows_t - lag
            before = transl[then] + torch.randn(len(rows), 3) * 0.01 / 3**0.5
            x.append((root_t @ (position - before)[..., None])[..., 0] * (30.0 / lag))
            if variant == "history":
                past = noisy(rotations[then])
                x += [six((root_t @ past[:, 0])[:, None]), six(past[:, UPPER])]
        return torch.cat(x, 1), six(truth[:, LEGS])

    fk = ForwardKinematics()
    pose = torch.as_tensor(ds.pose).float()

    def leg_error(rows: np.ndarray, predicted: torch.Tensor) -> float:
        body = pose[torch.as_tensor(rows)].clone()
        body[:, 0] = 0.0
        truth = fk(body, torch.zeros(len(rows), 3)).joints[:, LEGS[2:]]
        legs = roma.special_gramschmidt(predicted.reshape(len(rows), len(LEGS), 3, 2))
        body[:, LEGS] = roma.rotmat_to_rotvec(legs)
        return float((fk(body, torch.zeros(len(rows), 3)).joints[:, LEGS[2:]] - truth).norm(dim=-1).mean() * 1000)

    train = idx[ok & ds.split_mask("train")]
    valid = idx[ok & ds.split_mask("val")]
    valid = valid[np.random.RandomState(1).choice(len(valid), min(20000, len(valid)), replace=False)]
    results = {}
    for variant in ("frame", "velocity", "history"):
        t0 = time.time()
        width = features(train[:2], variant)[0].shape[1]
        net = torch.nn.Sequential(torch.nn.Linear(width, 512), torch.nn.SiLU(), torch.nn.Linear(512, 512),
                                  torch.nn.SiLU(), torch.nn.Linear(512, 6 * len(LEGS)))
        opt = torch.optim.AdamW(net.parameters(), 1e-3)
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=args.steps)
        for _ in tqdm(range(args.steps), desc=variant, unit="step"):
            x, y = features(train[np.random.randint(len(train), size=1024)], variant)
            loss = (net(x) - y).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
        with torch.no_grad():
            x, _ = features(valid, variant)
            results[variant] = {"leg_error_mm": round(leg_error(valid, net(x)), 1), "inputs": width,
                                "seconds": round(time.time() - t0)}
        print(f"{variant}: {results[variant]['leg_error_mm']} mm", flush=True)
    args.out.write_text(json.dumps({
        "command": "python bench/" + Path(__file__).name + " " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"), "machine": platform.platform(), "torch": torch.__version__,
        "dataset": default_dataset_path().name, "train_frames": int(len(train)), "valid_frames": int(len(valid)),
        "rotation_noise_rad": args.rotation_noise, "lags_frames_30hz": LAGS, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
