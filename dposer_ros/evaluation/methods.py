"""The methods `dposer eval` can compare: one line each in METHODS.

An entry maps a name to a builder `(prior, options) -> MethodFactory`, where a MethodFactory is
`(KeypointFormat) -> solver` and a solver is `(Observation, BodyState | None) -> Refined` (solvers/types.py).
A solver class built as `Class(prior, fmt)` is added with `_solver("module", "Class")`; imports happen only when
the method is built, so a method whose module or model file is missing fails alone, with its reason.
`options` carries command-line settings a builder may need (`baselines_dir`: the fitted GMM / VAE files; `motion`:
the motion model of hidden legs).
The refiners' settings are `RefineSettings` defaults (config/solvers/refine.yaml) with the method's overrides from
config/solvers/methods.yaml (each prior's weight and robust scale, chosen on the validation split).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runner import MethodFactory

Builder = Callable[[object, dict | None], "MethodFactory"]
DEFAULT_BASELINES_DIR = Path(__file__).resolve().parents[2] / "models" / "dposer_cpu" / "baselines"
DEFAULT_COMPLETION = DEFAULT_BASELINES_DIR.parent / "completion.pt"
DEFAULT_MOTION = DEFAULT_BASELINES_DIR.parent / "motion.pt"
METHOD_SETTINGS = Path(__file__).resolve().parents[2] / "config" / "solvers" / "methods.yaml"


def method_settings(name: str, path: Path = METHOD_SETTINGS, **overrides):
    """`RefineSettings` of a refiner method: the defaults, the method's entry in `path`, then `overrides`."""
    import yaml

    from ..solvers.refine import RefineSettings

    entry = (yaml.safe_load(Path(path).read_text()) or {}).get(name) or {}
    return RefineSettings(**{**entry, **overrides})


def _solver(module: str, cls: str, settings: str | None = None, **kwargs) -> Builder:
    """Builder of `Class(prior, fmt, **kwargs)` from `dposer_ros.<module>`, imported when the method is built;
    with `settings`, a refiner given `method_settings(settings, **options["settings"])` and the network on
    `options["engine"]` where given (an inference engine: no gradients, so only refiners take it); refiners take the
    step compiled ahead of time with `options["compiled_step"]`, and the diffusion prior's refiner its warm frames'
    steps as one ONNX graph in ONNX Runtime with `options["frame_graph"]` (solvers/warm_frame.py)."""
    def build(prior, options: dict | None = None) -> MethodFactory:
        solver_cls = getattr(import_module(f"dposer_ros.{module}"), cls)
        extra = dict(kwargs)
        network = prior
        if settings is not None:
            extra["settings"] = method_settings(settings, **(options or {}).get("settings", {}))
            network = (options or {}).get("engine") or prior
        def make(fmt):
            solver = solver_cls(network, fmt, **extra)
            if (options or {}).get("compiled_step") and hasattr(solver, "use_compiled"):
                from ..solvers.compiled_step import CompiledStep

                solver.use_compiled(CompiledStep.for_refiner(fmt, solver.settings))
            if (options or {}).get("frame_graph") and solver_cls.__name__ == "FewStepRefiner" \
                    and solver.completion is None:
                from ..solvers.warm_frame import OnnxFrame

                solver.frame = OnnxFrame.load(solver, prior)
            return solver
        return make
    return build


def _baseline(name: str, cls: str, argument: str, model_cls: str, file: str) -> Builder:
    """Builder of `solvers.baselines.Class(prior, fmt, <argument>=<model_cls>.load(baselines_dir / file))`."""
    def build(prior, options: dict | None = None) -> MethodFactory:
        path = Path((options or {}).get("baselines_dir") or DEFAULT_BASELINES_DIR) / file
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: fit the baseline priors with `dposer baselines --out {path.parent}`")
        model = getattr(import_module("dposer_ros.prior.classical"), model_cls).load(path)
        return _solver("solvers.baselines", cls, name, **{argument: model})(prior, options)
    return build


def _with_completion(prior, options: dict | None = None) -> MethodFactory:
    """The few-step refiner with the completion model as the target of hidden body joints."""
    from ..prior.completion import Completion

    completion = Completion.load(Path((options or {}).get("completion") or DEFAULT_COMPLETION))
    return _solver("solvers.refine", "FewStepRefiner", "few_step_completion", completion=completion)(prior, options)


def _few_step(prior, options: dict | None = None) -> MethodFactory:
    """The few-step refiner with the motion model of hidden legs (`options["motion"]`, default the shipped one; its
    use is the `motion_legs` setting)."""
    from ..prior.motion import LegMotion

    motion = LegMotion.load(Path((options or {}).get("motion") or DEFAULT_MOTION))
    return _solver("solvers.refine", "FewStepRefiner", "few_step", motion=motion)(prior, options)


METHODS: dict[str, Builder] = {
    "few_step": _few_step,  # the diffusion prior, few steps (hidden legs of a moving person: the motion model)
    "few_step_completion": _with_completion,  # ... with hidden body joints pulled to their completion
    "full": _solver("solvers.full", "FullOptimizer"),  # published DPoser optimisation (default FullSettings; slow)
    "no_prior": _solver("solvers.baselines", "NoPriorRefiner", "no_prior"),  # the same solver without a prior term
    "gmm": _baseline("gmm", "GMMRefiner", "gmm", "GMMPrior", "gmm.npz"),  # SMPLify-style GMM prior
    "vae": _baseline("vae", "VAERefiner", "vae", "VAEPrior", "vae.pt"),  # VPoser-style VAE prior
}


class MethodError(ValueError):
    """A method is unknown or could not be built."""


def available_methods() -> tuple[str, ...]:
    return tuple(METHODS)


def build_methods(names: list[str], prior, options: dict | None = None) -> tuple[dict[str, MethodFactory], dict[str, str]]:
    """Factories of the named methods, and the errors of those that could not be built (name -> message).

    An unknown name is an error at once (with the list of available methods).
    """
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise MethodError(f"unknown method(s) {', '.join(unknown)}; available methods: {', '.join(METHODS)}")
    factories, errors = {}, {}
    for name in names:
        try:
            factories[name] = METHODS[name](prior, options or {})
        except Exception as err:  # an import error, a missing model file ...
            errors[name] = f"{type(err).__name__}: {err}"
    return factories, errors
