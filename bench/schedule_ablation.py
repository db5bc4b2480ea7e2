"""Truncated against uniform timesteps in the few-step refiner, on the test clips of `dposer eval` (seed 0).

Run: python bench/schedule_ablation.py
"""
import torch
torch.set_num_threads(1)
from dposer_ros.evaluation import evaluate, load_corruptions, select_clips
from dposer_ros.dataset.poses import load_dataset, default_dataset_path
from dposer_ros.prior.model import PosePrior
from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings
from dposer_ros.solvers.baselines import NoPriorRefiner
prior = PosePrior.load('models/dposer_cpu/prior.pt')
data = load_dataset(default_dataset_path())
clips = select_clips(data, 8, 45, 'body', seed=0, split='test')
cors = load_corruptions()
cors = {k: cors[k] for k in ['cam_noise_4cm', 'cam_occl_limb', 'cam_occl_legs', 'cam_occl_random30', 'radar']}
variants = {"trunc_.9-.3": {}, "trunc_.3-.05": {"t_max": 0.3, "t_min": 0.05}, "uniform": {"schedule": "uniform"}}
methods = {'no_prior': lambda fmt: NoPriorRefiner(prior, fmt)}
for name, kw in variants.items():
    methods[name] = (lambda kw: (lambda fmt: FewStepRefiner(prior, fmt, RefineSettings(**kw))))(kw)
res = evaluate(methods, cors, clips, seed=0, progress=False)
for row in res.rows:
    m = row.metrics
    print(f"{row.corruption:18s} {row.method:10s} all {m['mpjpe_all']:.1f} occ {m['mpjpe_occluded'] if m['mpjpe_occluded'] is None else round(m['mpjpe_occluded'],1)} p50 {m['latency_p50_ms']:.1f}")
