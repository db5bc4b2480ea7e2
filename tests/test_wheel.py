"""Packaging: the wheel holds every module and data file the library needs, without the source checkout.

Builds the wheel (`pip wheel --no-deps --no-build-isolation`), unpacks it into a fresh folder and, in a new
interpreter started outside the checkout with that folder first on the path, imports every module of the library
layers (ros/ needs rclpy and the built messages: it is imported only if they load) and runs one refinement.
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import importlib, pkgutil, sys
import dposer_ros
assert dposer_ros.__file__.startswith(sys.argv[1]), f"imported from {dposer_ros.__file__}, not the wheel"
skipped = []
for mod in pkgutil.walk_packages(dposer_ros.__path__, "dposer_ros."):
    try:
        importlib.import_module(mod.name)
    except ImportError as err:
        if not mod.name.startswith("dposer_ros.ros") or "rclpy" not in str(err) and "dposer_msgs" not in str(err):
            raise
        skipped.append(mod.name)
import torch
from dposer_ros.keypoints import get_format, known_formats
from dposer_ros.body import ForwardKinematics
from dposer_ros.prior.layout import DIM
from dposer_ros.prior.model import Normalizer, PosePrior
from dposer_ros.prior.network import ScoreNet
from dposer_ros.prior.sde import SubVPSDE
from dposer_ros.solvers.refine import FewStepRefiner
from dposer_ros.solvers.types import Observation
from dposer_ros.evaluation.foreign import foreign_table
from dposer_ros.retarget.sources import load_sources
assert len(known_formats()) >= 10 and foreign_table()["formats"] and load_sources()
fmt = get_format("h36m17")
prior = PosePrior(ScoreNet(hidden=32, blocks=1, time_dim=16, groups=8, dropout=0.0), SubVPSDE(),
                  Normalizer(torch.zeros(DIM), torch.ones(DIM))).eval()
kp = fmt.from_posed(ForwardKinematics()(torch.zeros(1, 55, 3))).float()
out = FewStepRefiner(prior, fmt)(Observation(kp, torch.ones(1, 17), fmt))
assert torch.isfinite(out.joints).all() and out.betas.shape == (1, 10)
print("ok", len(skipped))
"""


def test_wheel_has_every_module_and_data_file_and_refines(tmp_path):
    source = tmp_path / "src"  # a copy: an in-tree build would leave build/ and egg-info in the checkout
    skip = shutil.ignore_patterns(".git", ".venv", "ros_ws", "bench", "tests", "out", "runs", "build", "*.egg-info",
                                  "__pycache__", "engines")
    shutil.copytree(ROOT, source, ignore=skip, symlinks=True)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("dposer_ros-*.whl"))
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(target)
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "dposer_ros").rglob("*")
               if p.suffix in (".py", ".yaml", ".json", ".npz") and "__pycache__" not in p.parts}
    missing = sorted(sources - set(names))
    assert not missing, f"the wheel lacks {missing}"
    run = subprocess.run([sys.executable, "-c", PROBE, str(target)], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert run.returncode == 0 and run.stdout.startswith("ok"), run.stdout + run.stderr[-3000:]
