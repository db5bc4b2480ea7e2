"""The few-step refiner in a process of its own, so that its Python never waits for the caller's interpreter lock.

In one process the ROS executor (deserialising messages, checking them) and the solver take turns at the
interpreter lock: measured under 10 whole-body people at 60 Hz the node's two threads together used 0.84 of the
machine's two cores, and a solver frame took 37-50 ms in the node against 15 ms alone. `SolverProcess` runs the
refinement in a child (`python -m dposer_ros.backends.solver_process`) that loads the prior and the motion model
itself; a call sends the observation and the warm start over a socket and returns the answer (numpy arrays
pickled, about 0.2 ms for 10 people). `RefinerCache` is the same call in-process. Both are `Solver`s:

    solver(fmt, settings, obs, init) -> Refined

A child that dies (a crash, the OOM killer) fails the call it was serving and is started again on the next one.
The child ignores SIGINT (a terminal's Ctrl-C goes to the whole process group: the parent decides when it ends)
and exits when its parent closes the socket, or dies.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import fields, is_dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..keypoints.format import KeypointFormat
from ..solvers.compiled_step import BackgroundCompiler
from ..solvers.refine import FewStepRefiner, RefineSettings
from ..solvers.types import BodyState, Observation, Refined
from ..solvers.warm_frame import FrameGraphs

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # loading torch, the prior and an ONNX Runtime session; a first export takes longest
FRAME_GRAPH_START_TIMEOUT_S = 900.0  # ... and a warm-frame graph's first export and load (minutes on a 2-core CPU)


class Solver(Protocol):
    def __call__(self, fmt: KeypointFormat, settings: RefineSettings, obs: Observation,
                 init: BodyState | None) -> Refined: ...


class RefinerCache:
    """In-process: one `FewStepRefiner` per format and settings, built on first use. With `compiler`, each takes
    the step compiled ahead of time as soon as its package is there (compiled in the background meanwhile)."""

    def __init__(self, prior, motion=None, compiler: BackgroundCompiler | None = None,
                 frames: FrameGraphs | None = None) -> None:
        self.prior, self.motion, self.compiler, self.frames = prior, motion, compiler, frames
        self._refiners: dict[tuple[str, RefineSettings], FewStepRefiner] = {}
        self._lock = threading.Lock()

    def _refiner(self, fmt: KeypointFormat, settings: RefineSettings) -> FewStepRefiner:
        if len(self._refiners) > 64:  # settings changed at run time many times over
            self._refiners.clear()
        ref = self._refiners.get((fmt.name, settings))
        if ref is None:
            ref = self._refiners[(fmt.name, settings)] = FewStepRefiner(self.prior, fmt, settings, motion=self.motion)
        return ref

    def refiner(self, fmt: KeypointFormat, settings: RefineSettings) -> FewStepRefiner:
        with self._lock:
            ref = self._refiner(fmt, settings)
            if self.compiler is not None and ref.compiled is None:
                ref.use_compiled(self.compiler.get(fmt, settings))
            if self.frames is not None and ref.frame is None and ref.completion is None:
                ref.frame = self.frames.get(ref)
            return ref

    def prepare_frame(self, fmt: KeypointFormat, settings: RefineSettings) -> None:
        """Load the warm-frame graph of this format and settings now (exported first where needed: a minute on a
        small CPU), not at the first call."""
        if self.frames is not None:
            with self._lock:
                ref = self._refiner(fmt, settings)
                ref.frame = self.frames.prepare(ref)

    def step_status(self) -> str:
        """What runs the solver's step: 'eager', or the formats whose step is compiled ahead of time (and those
        whose warm frames run as one graph)."""
        graphs = "" if self.frames is None or not self.frames.status() else f"; warm frames as one graph: {self.frames.status()}"
        if self.compiler is None:
            return "eager" + graphs
        with self._lock:
            compiled = sorted({name for (name, _), ref in self._refiners.items() if ref.compiled is not None})
        return ("compiled: " + ", ".join(compiled) if compiled else "eager (compiling in the background)") + graphs

    def close(self) -> None:
        if self.compiler is not None:
            self.compiler.close()

    def __call__(self, fmt: KeypointFormat, settings: RefineSettings, obs: Observation,
                 init: BodyState | None) -> Refined:
        return self.refiner(fmt, settings)(obs, init)


class SolverProcessError(RuntimeError):
    """The child could not start, or went away during a call."""


class SolverProcess:
    """The refiner in a child process: `prior` (a checkpoint path) on `backend` with `threads` torch / ONNX Runtime
    threads (`int8`: ONNX Runtime on a CPU with int8 weights; `compiled_step`: the solver's step compiled ahead of
    time, `solvers.compiled_step.BackgroundCompiler`, loaded at start for the (format name, settings) of `prepare`;
    `frame_graph`: the warm frames' prior steps as one ONNX graph, `solvers.warm_frame.FrameGraphs`, loaded at start
    for those of `prepare`, which may take minutes the first time: the start waits for it),
    and the motion model at `motion` (None: none).
    Raises `SolverProcessError` with the child's own message when it cannot load them. Calls are serialised (one
    worker thread is the expected caller)."""

    def __init__(self, prior: Path, backend: str = "auto", threads: int = 1, motion: Path | None = None,
                 start_timeout: float = START_TIMEOUT_S, int8: bool = False, compiled_step: bool = False,
                 prepare: tuple[tuple[str, RefineSettings], ...] = (), frame_graph: bool = False) -> None:
        self.spec = {"prior": str(prior), "backend": backend, "threads": int(threads),
                     "motion": None if motion is None else str(motion), "int8": bool(int8),
                     "compiled_step": bool(compiled_step), "prepare": tuple(prepare), "frame_graph": bool(frame_graph)}
        self.start_timeout = max(start_timeout, FRAME_GRAPH_START_TIMEOUT_S) if frame_graph else start_timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._conn: Connection | None = None
        self.restarts = 0  # children started again after one went away
        self.backend = ""  # what the child loaded: the engine's name
        self.motion_loaded = False
        self.messages: list[tuple[int, str]] = []  # (logging level, text) the child logged while loading
        self._start()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        """The child is alive (it may have been started again)."""
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        parent, child = socket.socketpair()
        cmd = [sys.executable, "-m", __name__, str(child.fileno())]
        try:
            self._proc = subprocess.Popen(cmd, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL)
        finally:
            child.close()
        self._sock, self._conn = parent, Connection(os.dup(parent.fileno()))
        self._conn.send_bytes(pickle.dumps(self.spec))
        reply = self._receive(self.start_timeout, "starting")
        if reply[0] != "ready":
            self._stop()
            raise SolverProcessError(reply[1])
        _, self.backend, self.motion_loaded, self.messages = reply

    def _receive(self, timeout: float | None, doing: str) -> tuple:
        conn, proc = self._conn, self._proc
        assert conn is not None and proc is not None
        try:
            if timeout is not None and not conn.poll(timeout):
                self._stop()
                raise SolverProcessError(f"the solver process did not answer within {timeout:.0f} s ({doing})")
            return pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            self._stop()
            raise SolverProcessError(f"the solver process exited with code {proc.returncode} while {doing}") from None

    def __call__(self, fmt: KeypointFormat, settings: RefineSettings, obs: Observation,
                 init: BodyState | None) -> Refined:
        with self._lock:
            if self._conn is None or self._proc is None or self._proc.poll() is not None:
                self._stop()
                self.restarts += 1
                self._start()
            assert self._conn is not None
            try:
                self._conn.send_bytes(pickle.dumps(("refine", fmt, settings, to_numpy(obs), to_numpy(init)),
                                                   protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:
                self._stop()
                raise SolverProcessError("the solver process went away before the call") from None
            reply = self._receive(None, f"refining {obs.points.shape[0]} people")
        if reply[0] == "raised":
            raise SolverProcessError(f"in the solver process: {reply[1]}")
        return to_torch(reply[1])

    def _stop(self, timeout: float = 2.0) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.wait(timeout=timeout)  # it exits once its socket is closed (after a call in progress)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5.0)

    def close(self, timeout: float = 2.0) -> None:
        """Close the socket and wait up to `timeout` s for the child (then kill it). A call in progress on another
        thread fails at once."""
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on it (closing the descriptor would not)
            except OSError:
                pass
        with self._lock:
            self._stop(timeout)


def to_numpy(obj: Any) -> Any:
    """A dataclass (Observation, BodyState, Refined, ...) with its tensors as numpy arrays, for pickling: torch's own
    pickling of small tensors costs ~10x more."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if is_dataclass(obj) and not isinstance(obj, type):
        return _rebuild(obj, to_numpy)
    return obj


def to_torch(obj: Any) -> Any:
    """The inverse of `to_numpy`."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj if obj.flags.writeable else obj.copy())  # unpickled from bytes: read-only
    if is_dataclass(obj) and not isinstance(obj, type):
        return _rebuild(obj, to_torch)
    return obj


def _rebuild(obj: Any, convert) -> Any:
    """A copy of a dataclass with `convert` applied to its fields, without running its __post_init__ again (an
    Observation's checks scale the confidences: they ran once, where it was made)."""
    out = object.__new__(type(obj))
    for f in fields(obj):
        object.__setattr__(out, f.name, convert(getattr(obj, f.name)))
    return out


# ------------------------------------------------------------------------------------------------ child


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage()))


def _load(spec: dict) -> tuple[RefinerCache, str, bool, list[tuple[int, str]]]:
    from . import select_engine

    collect = _Collect()
    loggers = [logging.getLogger(name) for name in ("dposer_ros.backends", "dposer_ros.solvers")]
    for logger in loggers:
        logger.addHandler(collect)
        logger.setLevel(logging.INFO)
    try:
        if spec["threads"] > 0:
            torch.set_num_threads(spec["threads"])
        engine = select_engine(Path(spec["prior"]), spec["backend"], threads=spec["threads"] or None,
                               int8=spec.get("int8", False))
        motion = None
        if spec["motion"] is not None:
            from ..prior.motion import LegMotion

            motion = LegMotion.load(Path(spec["motion"]))
        compiler = BackgroundCompiler() if spec.get("compiled_step") else None
        frames = None
        if spec.get("frame_graph"):
            from ..prior.model import PosePrior
            from ..solvers.warm_frame import frame_device

            frames = FrameGraphs(PosePrior.load(Path(spec["prior"])), frame_device(spec["backend"]),
                                 spec["threads"] or 1)
        cache = RefinerCache(engine, motion, compiler, frames)
        if compiler is not None or frames is not None:
            from ..keypoints import get_format

            for name, settings in spec.get("prepare", ()):  # the compiled step and the graph loaded now, not at a call
                cache.refiner(get_format(name), settings)
                cache.prepare_frame(get_format(name), settings)
    finally:
        for logger in loggers:
            logger.removeHandler(collect)
    return cache, getattr(engine, "name", type(engine).__name__), motion is not None, collect.records


def serve(fd: int) -> int:
    """The child's loop: load what the spec names, then answer calls until the parent closes the socket."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    solve: RefinerCache | None = None
    try:
        spec = pickle.loads(conn.recv_bytes())
        try:
            solve, backend, motion, messages = _load(spec)
        except Exception as err:  # noqa: BLE001 - the parent raises it with the child's message
            conn.send_bytes(pickle.dumps(("error", f"{type(err).__name__}: {err}")))
            return 1
        conn.send_bytes(pickle.dumps(("ready", backend, motion, messages)))
        while True:
            _, fmt, settings, obs, init = pickle.loads(conn.recv_bytes())
            try:
                reply: tuple = ("ok", to_numpy(solve(fmt, settings, to_torch(obs), to_torch(init))))
            except Exception as err:  # noqa: BLE001 - the call fails in the parent, the child goes on
                reply = ("raised", f"{type(err).__name__}: {err}")
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
    except (EOFError, OSError):
        if solve is not None:
            solve.close()  # a compilation of the solver's step still running ends with it
        return 0  # the parent closed the socket, or went away


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: python -m dposer_ros.backends.solver_process FD (started by SolverProcess, not by hand)")
    code = serve(int(sys.argv[1]))
    sys.stderr.flush()
    os._exit(code)  # skip the interpreter's teardown of torch and ONNX Runtime (about 1 s): the parent waits for it
