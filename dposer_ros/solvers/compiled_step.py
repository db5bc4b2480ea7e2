"""The refiner's warm Gauss-Newton step compiled ahead of time: `torch.export` + AOTInductor, one package per keypoint
format and step constants, the batch dimension dynamic.

Eager torch spends most of a small step in Python and op dispatch (about 3,000 small operations a frame); the
compiled step is one call into generated C++ (LAPACK's Cholesky of the joint system stays a library call; the 3 x 3
systems are unrolled). It is the step of `gauss_newton.gauss_newton_step` with the refiner's warm pull structure
fixed: three diagonal pulls (the prior's, the rest pull with the tilt, the hold; an absent one is passed at zero
strength, which adds exact zeros) and the weak hold. The solve is Cholesky without the LU fallback (no branch on
data in a graph); a step whose factorisation fails comes back non-finite, and the caller runs the eager step
instead. The first call of each batch size is checked against the eager step (`confirm`): a size whose answer
differs runs eagerly from then on. Compiling takes tens of seconds, once: the package is cached on disk (`dposer
compile`), keyed by everything that shapes the graph (format, constants, the solver's source, torch's version).
bench/RESULTS.md, "The solver compiled ahead of time", has the measurements.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import roma
import torch

from ..body.jacobian import AttachedPoints
from ..body.kinematics import ForwardKinematics
from ..keypoints.format import KeypointFormat
from ..paths import default_engine_dir, sources_sha256
from .gauss_newton import Pull, gauss_newton_step

LOG = logging.getLogger("dposer_ros.solvers")
DIAGONAL_PULLS = 3  # the prior's, the rest (with the root's tilt), the hold
MAX_BATCH = 256
KEEP_PACKAGES = 4  # packages kept per keypoint format in a cache folder: the least recently used beyond are removed
# the modules whose code is in the graph: a change to any of them is another package
SOURCES = ("solvers/gauss_newton.py", "solvers/linear.py", "body/jacobian.py", "body/kinematics.py",
           "solvers/compiled_step.py")


class WarmStep(torch.nn.Module):
    """The step as a module of tensors only: the graph `torch.export` traces."""

    def __init__(self, fmt: KeypointFormat, free: tuple[int, ...], damping: float, weak_cm: float) -> None:
        super().__init__()
        self.fk = ForwardKinematics()
        self.points = AttachedPoints(self.fk, fmt.joints, fmt.offsets, free)
        self.damping, self.weak_cm = damping, weak_cm

    def forward(self, local, transl, target, weight, pull_targets, pull_scales, weak_target, weak_scale, rest,
                offsets, pose, sigma_cm):
        pulls = [Pull(pull_targets[i], pull_scales[i]) for i in range(DIAGONAL_PULLS)]
        pulls.append(Pull(weak_target, weak_scale, weak_cm=self.weak_cm))
        local, transl = gauss_newton_step(self.fk, self.points, local, transl, target, weight, pulls, self.damping,
                                          sigma_cm[:, None], rest_joints=rest, offsets=offsets, pose=pose,
                                          fallback=False)
        return local, transl, roma.rotmat_to_rotvec(local)  # the next step's axis-angle, at no extra call


def package_key(fmt: KeypointFormat, free: tuple[int, ...], damping: float, weak_cm: float) -> str:
    """sha256 of what the compiled graph depends on."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": fmt.name, "joints": [int(j) for j in fmt.joints],
                              "offsets": np.asarray(fmt.offsets).tolist(), "free": list(free),
                              "damping": damping, "weak_cm": weak_cm,
                              "torch": torch.__version__, "max_batch": MAX_BATCH}, sort_keys=True).encode())
    digest.update(sources_sha256(SOURCES).encode())
    return digest.hexdigest()


def example_inputs(fmt: KeypointFormat, free: tuple[int, ...], batch: int) -> tuple[torch.Tensor, ...]:
    """Inputs of `WarmStep` for `batch` people (a rest pose; shapes and dtypes are what matter)."""
    f, k = len(free), fmt.num_keypoints
    fk = ForwardKinematics()
    return (torch.eye(3).repeat(batch, fk.skeleton.num_joints, 1, 1), torch.zeros(batch, 3), torch.zeros(batch, k, 3),
            torch.ones(batch, k), torch.zeros(DIAGONAL_PULLS, batch, f, 3), torch.ones(DIAGONAL_PULLS, batch, f, 3),
            torch.zeros(batch, f, 3), torch.ones(batch, f, 1), fk.rest_joints.float().expand(batch, -1, -1).clone(),
            torch.zeros(batch, k, 3), torch.zeros(batch, fk.skeleton.num_joints, 3), torch.full((batch,), 10.0))


class CompiledStep:
    """The compiled warm step of one format and its constants; `load` compiles it on first use (and caches it)."""

    def __init__(self, runner, path: Path, constants: dict) -> None:
        self.runner, self.path, self.constants = runner, path, constants
        self.calls = 0
        self.fallbacks = 0  # calls the eager step answered (a failed factorisation)
        # batch sizes whose first call matched the eager step, and those that did not (eager for them from then on)
        self.verified: set[int] = set()
        self.refused: set[int] = set()

    def confirm(self, batch: int, local: torch.Tensor, reference: torch.Tensor, tolerance: float = 1e-3) -> bool:
        """Check a batch size's first compiled answer (rotations) against the eager step's; False refuses the size."""
        difference = float((local - reference).abs().max())
        if difference <= tolerance:
            self.verified.add(batch)
            return True
        self.refused.add(batch)
        LOG.warning("compiled step differs from the eager one by %.3g at batch %d: eager steps for that batch size",
                    difference, batch)
        return False

    @classmethod
    def for_refiner(cls, fmt: KeypointFormat, settings, cache_dir: str | Path | None = None,
                    compile_missing: bool = True) -> CompiledStep | None:
        """The step of `FewStepRefiner(..., fmt, settings)`: its free joints, damping and weak hold."""
        from .refine import FREE_JOINTS

        return cls.load(fmt, FREE_JOINTS, settings.damping, settings.weak_dof_cm, cache_dir, compile_missing)

    @staticmethod
    def package_path(fmt: KeypointFormat, free: tuple[int, ...], damping: float, weak_cm: float,
                     cache_dir: str | Path | None = None) -> Path:
        key = package_key(fmt, free, damping, weak_cm)
        return (Path(cache_dir) if cache_dir is not None else default_engine_dir()) / f"step-{fmt.name}-{key[:16]}.pt2"

    @classmethod
    def load(cls, fmt: KeypointFormat, free: tuple[int, ...], damping: float, weak_cm: float,
             cache_dir: str | Path | None = None, compile_missing: bool = True) -> CompiledStep | None:
        """The cached package, else (with `compile_missing`) a new one; None when there is none and none is made.
        Loading marks the package used (`prune_packages`)."""
        path = cls.package_path(fmt, free, damping, weak_cm, cache_dir)
        if not path.is_file():
            if not compile_missing:
                return None
            compile_package(WarmStep(fmt, free, damping, weak_cm), example_inputs(fmt, free, 2), path)
        prune_packages(path)
        constants = {"format": fmt.name, "damping": damping, "weak_dof_cm": weak_cm}
        return cls(torch._inductor.aoti_load_package(str(path)), path, constants)

    def __call__(self, local: torch.Tensor, transl: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                 diagonal: list[Pull], weak: Pull | None, rest: torch.Tensor, offsets: torch.Tensor,
                 pose: torch.Tensor, sigma_cm: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The step: local rotations, translation and the new pose's axis-angle (B, J, 3); None where it failed (run
        the eager one). `diagonal`: at most three diagonal pulls; `pose` the axis-angle of `local`; `sigma_cm` the
        robust scale of the keypoint residuals (an input of the graph: a new track's wider one needs no package)."""
        batch, free = pose.shape[0], weak.target.shape[1] if weak is not None else diagonal[0].target.shape[1]
        if len(diagonal) > DIAGONAL_PULLS or batch > MAX_BATCH or batch in self.refused:
            return None
        shape = (batch, free, 3)
        targets = torch.zeros((DIAGONAL_PULLS, *shape))
        scales = torch.zeros((DIAGONAL_PULLS, *shape))
        for i, pull in enumerate(diagonal):
            targets[i] = pull.target
            scales[i] = torch.as_tensor(pull.scale).expand(shape)
        weak_target = weak.target if weak is not None else torch.zeros(shape)
        weak_scale = torch.as_tensor(weak.scale).expand(batch, free, 1) if weak is not None else torch.zeros(batch, free, 1)
        self.calls += 1
        try:
            local_out, transl_out, pose_out = self.runner(
                local.contiguous(), transl.contiguous(), target.contiguous(), weight.contiguous(), targets, scales,
                weak_target.contiguous(), weak_scale.contiguous(), rest.contiguous(), offsets.contiguous(),
                pose.contiguous(), torch.full((batch,), float(sigma_cm)))
        except RuntimeError as err:  # a check inside the graph (an index out of range): the eager step decides
            LOG.warning("compiled step failed (%s); eager step instead", err)
            self.fallbacks += 1
            return None
        if not bool(torch.isfinite(transl_out).all()):  # a failed factorisation is NaN in every unknown
            self.fallbacks += 1
            return None
        return local_out, transl_out, pose_out


def compile_package(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> Path:
    """Export `module` with a dynamic batch (dimension 0 of every input; the pulls' dimension 1) and compile it with
    AOTInductor into `path` (written atomically)."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dynamic = tuple({1: batch} if x.dim() == 4 and x.shape[0] == DIAGONAL_PULLS and i in (4, 5) else {0: batch}
                    for i, x in enumerate(inputs))
    LOG.info("compiling the solver's step ahead of time into %s (first use; tens of seconds)", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_compiler(), tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        program = torch.export.export(module, inputs, dynamic_shapes=dynamic, strict=False)
        staged = Path(tmp) / path.name
        torch._inductor.aoti_compile_and_package(program, package_path=str(staged))
        os.replace(staged, path)
    return path


@contextlib.contextmanager
def _quiet_compiler():
    """torch's own notes while exporting and compiling, which say nothing to a user of the step: deprecations inside
    torch (FutureWarning) and AOTInductor's "missing a c-shim implementation, using proxy executor" for the LAPACK
    calls (they run as ATen calls). Errors still raise."""
    inductor = logging.getLogger("torch._inductor")
    level = inductor.level
    inductor.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        inductor.setLevel(level)


def prune_packages(path: Path, keep: int = KEEP_PACKAGES) -> list[Path]:
    """Mark the package `path` used now and remove its format's other packages in its folder beyond the `keep` most
    recently used (each change of the solver's source, torch or the constants makes a new one: about 2 MB each, which
    would pile up over a robot's upgrades). A folder that cannot be written keeps everything. -> the removed files."""
    name = path.name.rsplit("-", 1)[0]  # step-<format>
    try:
        os.utime(path)
        packages = sorted((p for p in path.parent.glob(f"{name}-*.pt2") if p.name.rsplit("-", 1)[0] == name),
                          key=lambda p: p.stat().st_mtime, reverse=True)
        removed = [p for p in packages[max(keep, 1):] if p != path]
        for old in removed:
            old.unlink()
    except OSError as err:  # read-only cache, a file removed meanwhile: nothing lost but disk
        LOG.debug("not pruning solver packages beside %s: %s", path, err)
        return []
    if removed:
        LOG.info("removed %d unused solver step package(s) of %s", len(removed), name[len("step-"):])
    return removed


class BackgroundCompiler:
    """Compiled steps for a serving process that must not wait: `get` returns the cached package's step, or None
    while `dposer compile` makes it in a child process (started once per format and constants; eager meanwhile).
    A child that fails is logged and not started again."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.cache_dir = cache_dir
        self._loaded: dict[Path, CompiledStep] = {}
        self._children: dict[Path, subprocess.Popen] = {}
        self._failed: set[Path] = set()
        self._paths: dict[tuple, Path] = {}
        self._lock = threading.Lock()

    def get(self, fmt: KeypointFormat, settings) -> CompiledStep | None:
        from .refine import FREE_JOINTS

        constants = (fmt.name, settings.damping, settings.weak_dof_cm)
        with self._lock:  # the path once per format and constants (the serving side asks at every call meanwhile)
            path = self._paths.get(constants)
            if path is None:
                path = self._paths[constants] = CompiledStep.package_path(fmt, FREE_JOINTS, *constants[1:],
                                                                          self.cache_dir)
        with self._lock:
            if path in self._loaded:
                return self._loaded[path]
            child = self._children.get(path)
            if child is not None and child.poll() is None:
                return None  # still compiling
            if child is not None and child.returncode != 0 and path not in self._failed:
                self._failed.add(path)
                LOG.warning("compiling the solver's step for %s failed (exit %s): eager steps", fmt.name, child.returncode)
            if path in self._failed:
                return None
            if path.is_file():
                step = CompiledStep.for_refiner(fmt, settings, self.cache_dir, compile_missing=False)
                if step is not None:
                    self._loaded[path] = step
                    LOG.info("solver step compiled ahead of time: %s", path)
                return step
            command = [sys.executable, "-m", "dposer_ros.cli", "compile", "--format", fmt.name,
                       "--damping", repr(settings.damping), "--weak-dof-cm", repr(settings.weak_dof_cm)]
            if self.cache_dir is not None:
                command += ["--cache-dir", str(self.cache_dir)]
            LOG.info("compiling the solver's step for %s in the background (%s); eager steps until it is ready",
                     fmt.name, path)
            self._children[path] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return None

    def close(self) -> None:
        """Stop compilations still running (their packages are not written)."""
        with self._lock:
            for child in self._children.values():
                if child.poll() is None:
                    child.terminate()
            for child in self._children.values():
                try:
                    child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    child.kill()
