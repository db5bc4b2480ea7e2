"""Corruption models: what a camera or a radar makes of a ground-truth body.

A `Corruption` turns the posed SMPL-X body of a clip (T frames at 30 Hz) into the keypoint stream a sensor
would deliver: keypoints of one format, Gaussian noise, occlusions, a lower frame rate, dropouts.
The models are data (`config/eval/corruptions.yaml`); this module only interprets them.

Per clip, with one `torch.Generator` seeded by the caller, the draws are made in a fixed order:
  1. the occluded limb (occlusion `limb`: one of the listed joint sets, fixed for the whole clip);
  2. the noise level sigma (cm per axis; uniform in [lo, hi] when a range is given, fixed per clip);
  3. the noise, sigma * N(0, 1) per axis, per keypoint and emitted frame;
  4. the random occlusion (occlusion `random`: exactly round(fraction * K) keypoints hidden per frame);
  5. keypoint dropouts (each keypoint of each frame lost with probability `keypoint_dropout`);
  6. frame dropouts (each emitted frame but the first loses all its keypoints with probability `frame_dropout`).
Frames are emitted every `stride`-th frame of the clip, starting at frame 0 (stride 3 = 10 Hz).

Occlusions hide keypoints by the SMPL-X joint they are attached to (`KeypointFormat.joints`): a keypoint is hidden
when its joint is in the occluded joint set. So "left_arm" hides COCO's left shoulder, elbow and wrist, and in
COCO-WholeBody also the 21 left-hand keypoints; "left_hand" (the 15 finger joints + wrist) hides the hand keypoints
and the body wrist keypoint. The random occlusion counts keypoints of the format, not SMPL-X joints.

Confidence model: a hidden or dropped keypoint has confidence 0 and NaN coordinates (the solvers read confidence 0
as "missing"). A visible keypoint with noise vector e (metres) gets
    c = c_min + (1 - c_min) * exp(-(|e| / s)^2),      c_min = `confidence_floor` (0.5), s = `confidence_scale_cm`,
i.e. confidences in [c_min, 1] that fall as the keypoint's actual error grows, like a detector's heat-map peak.
This is an optimistic detector (its confidence knows the true error): a solver that weights by confidence is
helped a little; a solver that ignores it loses nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch
import yaml

from ..body import PART_JOINTS, Posed, smplx_neutral
from ..keypoints import KeypointFormat, get_format
from ..keypoints.format import parts_of

OCCLUSION_KINDS = ("none", "limb", "parts", "random")
CLIP_KINDS = ("body", "hands")
_CORRUPTION_KEYS = {
    "name", "group", "format", "clips", "noise_cm", "occlusion", "stride", "keypoint_dropout", "frame_dropout",
    "confidence_floor", "confidence_scale_cm", "description", "bias",
}
_OCCLUSION_KEYS = {"kind", "limbs", "fraction", "after_s"}


class CorruptionError(ValueError):
    """A corruption model is malformed or refers to an unknown format, limb or joint."""


@cache
def resolve_format(spec: str) -> KeypointFormat:
    """A packaged format by name, or several joined by '+' (e.g. both MediaPipe hands) into one format."""
    names = [s.strip() for s in spec.split("+")]
    if len(names) == 1:
        return get_format(names[0])
    parts = [get_format(n) for n in names]
    joints = np.concatenate([f.joints for f in parts])
    return KeypointFormat(
        name=spec,
        keypoint_names=tuple(f"{f.name}/{k}" for f in parts for k in f.keypoint_names),
        joints=joints,
        offsets=np.concatenate([f.offsets for f in parts]),
        weights=np.concatenate([f.weights for f in parts]),
        parts=parts_of(joints),
        description=" + ".join(f.description or f.name for f in parts),
    )


def joint_set(entries: list[str] | tuple[str, ...], where: str = "") -> tuple[int, ...]:
    """SMPL-X joint names and/or part names of PART_JOINTS (e.g. `left_hand` = its 15 finger joints) -> sorted indices."""
    skel = smplx_neutral()
    out: set[int] = set()
    for name in entries:
        if isinstance(name, int):
            out.add(int(name))
        elif name in PART_JOINTS:
            out.update(PART_JOINTS[name])
        elif name in skel.names:
            out.add(skel.index(name))
        else:
            raise CorruptionError(f"{where}unknown joint or part {name!r}; parts: {', '.join(PART_JOINTS)}; "
                                  f"joints: SMPL-X names such as left_wrist")
    return tuple(sorted(out))


@dataclass(frozen=True)
class Occlusion:
    """Which keypoints a sensor misses.

    none: nothing; limb: one of `limbs` drawn per clip; parts: all of `limbs` at once;
    random: a random `fraction` of the format's keypoints, drawn per frame.
    A limb or parts occlusion starts `after_s` seconds into the clip (0: from its first frame): a person seen whole
    who then walks behind something, as a track meets it.
    """

    kind: str = "none"
    limbs: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (name, SMPL-X joints)
    fraction: float = 0.0
    after_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in OCCLUSION_KINDS:
            raise CorruptionError(f"occlusion kind {self.kind!r} unknown; known: {', '.join(OCCLUSION_KINDS)}")
        if self.kind in ("limb", "parts") and not self.limbs:
            raise CorruptionError(f"occlusion {self.kind!r} needs at least one limb")
        if not 0.0 <= self.fraction < 1.0:
            raise CorruptionError(f"occlusion fraction must lie in [0, 1), got {self.fraction}")
        if not (0.0 <= self.after_s < math.inf) or (self.after_s > 0 and self.kind not in ("limb", "parts")):
            raise CorruptionError(f"occlusion after_s must be a finite time >= 0, and only a limb or parts occlusion "
                                  f"can start late; got {self.after_s} for {self.kind!r}")


@dataclass
class Corrupted:
    """A corrupted keypoint stream; unpacks as (points, confidence, visible, frames)."""

    points: torch.Tensor  # (T', K, 3) metres, NaN where not visible
    confidence: torch.Tensor  # (T', K) in [0, 1], 0 where not visible
    visible: torch.Tensor  # (T', K) bool
    frames: torch.Tensor  # (T',) long, indices into the clip
    sigma_cm: float = 0.0  # the noise level drawn for this clip
    limb: str | None = None  # the occluded limb drawn for this clip (occlusion `limb`)

    def __iter__(self):
        return iter((self.points, self.confidence, self.visible, self.frames))


@dataclass(frozen=True)
class Corruption:
    """A sensor model: keypoint format, noise, occlusion, rate and dropouts (see the module docstring)."""

    name: str
    format_name: str
    group: str = "camera"  # for plots and summaries: corruptions of a group are pooled
    clips: str = "body"  # which clips it applies to: body (body metrics) or hands (hand metrics)
    noise_cm: tuple[float, float] = (0.0, 0.0)  # sigma per axis, drawn uniformly in [lo, hi] per clip
    occlusion: Occlusion = field(default_factory=Occlusion)
    stride: int = 1  # emit every stride-th frame (30 Hz / stride)
    keypoint_dropout: float = 0.0
    frame_dropout: float = 0.0
    confidence_floor: float = 0.5
    confidence_scale_cm: float = 5.0
    description: str = ""
    fps: float = 30.0
    # a detector's convention: the keypoints of these joints sit this far (cm, world axes) from the truth, always
    bias: tuple[tuple[int, ...], tuple[float, float, float]] | None = None

    def __post_init__(self) -> None:
        lo, hi = self.noise_cm
        if not 0.0 <= lo <= hi:
            raise CorruptionError(f"corruption {self.name!r}: noise_cm must be a level or a range [lo, hi] with 0 <= lo <= hi")
        if self.stride < 1:
            raise CorruptionError(f"corruption {self.name!r}: stride must be >= 1")
        if self.clips not in CLIP_KINDS:
            raise CorruptionError(f"corruption {self.name!r}: clips must be one of {CLIP_KINDS}, got {self.clips!r}")
        for what in ("keypoint_dropout", "frame_dropout"):
            if not 0.0 <= getattr(self, what) < 1.0:
                raise CorruptionError(f"corruption {self.name!r}: {what} must lie in [0, 1)")
        if not (0.0 <= self.confidence_floor <= 1.0 and self.confidence_scale_cm > 0):
            raise CorruptionError(f"corruption {self.name!r}: need 0 <= confidence_floor <= 1 and confidence_scale_cm > 0")
        resolve_format(self.format_name)  # fail early on an unknown format

    @property
    def format(self) -> KeypointFormat:
        return resolve_format(self.format_name)

    @property
    def stated_noise_m(self) -> float:
        """The noise the sensor states (metres per axis): the middle of `noise_cm`, as a user would configure the
        node for it (`keypoint_noise_cm`); each clip draws its own level."""
        return 0.005 * (self.noise_cm[0] + self.noise_cm[1])

    @property
    def rate_hz(self) -> float:
        return self.fps / self.stride

    def hidden_keypoints(self, joints: tuple[int, ...]) -> torch.Tensor:
        """(K,) bool: the format's keypoints attached to any of `joints`."""
        return torch.as_tensor(np.isin(self.format.joints, joints))

    def apply(self, posed: Posed, generator: torch.Generator | int) -> Corrupted:
        """Corrupt a clip's posed body (joints (T, 55, 3), rotations (T, 55, 3, 3)); see the module docstring."""
        return self.apply_keypoints(self.format.from_posed(posed), generator)

    def apply_keypoints(self, truth: torch.Tensor, generator: torch.Generator | int) -> Corrupted:
        """Corrupt true keypoints (T, K, 3) of this format. A keypoint that is NaN in the truth (a skeleton that
        does not define it) is never visible; the random occlusion hides `fraction` of the defined keypoints."""
        gen = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator
        frames = torch.arange(0, truth.shape[0], self.stride)
        truth = truth[frames].to(torch.float32)
        n, k = truth.shape[:2]
        if self.bias is not None:
            moved = self.hidden_keypoints(self.bias[0])
            truth = truth + moved[None, :, None] * torch.tensor(self.bias[1], dtype=truth.dtype) / 100.0
        defined = torch.isfinite(truth).all(-1)
        occ = self.occlusion
        hidden = ~defined
        limb = None
        late = (frames.to(torch.float32) / self.fps >= occ.after_s)[:, None]  # (n, 1): frames the occlusion covers
        if occ.kind == "limb":
            i = int(torch.randint(len(occ.limbs), (1,), generator=gen))
            limb = occ.limbs[i][0]
            hidden |= self.hidden_keypoints(occ.limbs[i][1]) & late
        elif occ.kind == "parts":
            hidden |= self.hidden_keypoints(tuple(j for _, js in occ.limbs for j in js)) & late
        lo, hi = self.noise_cm
        sigma = lo + (hi - lo) * float(torch.rand((), generator=gen))
        noise = torch.randn(n, k, 3, generator=gen) * (sigma / 100.0)
        if occ.kind == "random":
            count = round(occ.fraction * int(defined[0].sum()))
            draw = torch.rand(n, k, generator=gen).masked_fill(~defined, float("inf"))  # undefined ones last
            order = draw.argsort(dim=1)
            hidden |= torch.zeros(n, k, dtype=torch.bool).scatter_(1, order[:, :count], True)
        if self.keypoint_dropout > 0:
            hidden |= torch.rand(n, k, generator=gen) < self.keypoint_dropout
        if self.frame_dropout > 0:
            lost = torch.rand(n, generator=gen) < self.frame_dropout
            lost[0] = False  # a track needs a first frame
            hidden |= lost[:, None]
        visible = ~hidden
        err_cm = noise.norm(dim=-1) * 100.0
        conf = self.confidence_floor + (1.0 - self.confidence_floor) * torch.exp(-(err_cm / self.confidence_scale_cm) ** 2)
        conf = torch.where(visible, conf, torch.zeros(()))
        points = torch.where(visible[..., None], truth + noise, torch.full((), math.nan))
        return Corrupted(points, conf, visible, frames, sigma, limb)

    __call__ = apply

    def to_dict(self) -> dict:
        d = asdict(self)
        d["format"] = d.pop("format_name")
        d["occlusion"] = {"kind": self.occlusion.kind, "fraction": self.occlusion.fraction,
                          "limbs": {name: list(js) for name, js in self.occlusion.limbs}, "after_s": self.occlusion.after_s}
        d["rate_hz"] = self.rate_hz
        return d


def default_corruptions_path() -> Path:
    from ..paths import config_path

    return config_path("eval/corruptions.yaml")


def load_corruptions(path: str | Path | None = None) -> dict[str, Corruption]:
    """Read the corruption models of a YAML file (default: config/eval/corruptions.yaml), in file order.

    The file has `limbs` (name -> SMPL-X joint or part names, used by occlusions) and `corruptions` (a list).
    """
    path = Path(path) if path is not None else default_corruptions_path()
    if not path.is_file():
        raise FileNotFoundError(f"corruption file {path} not found")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "corruptions" not in data or not isinstance(data["corruptions"], list):
        raise CorruptionError(f"{path}: expected a mapping with 'limbs' (optional) and a list 'corruptions'")
    limbs = {str(name): joint_set(js, f"{path}: limb {name!r}: ") for name, js in (data.get("limbs") or {}).items()}
    out: dict[str, Corruption] = {}
    for i, spec in enumerate(data["corruptions"]):
        where = f"{path}: corruption #{i} ({spec.get('name', '?') if isinstance(spec, dict) else spec!r})"
        if not isinstance(spec, dict) or not {"name", "format"} <= set(spec):
            raise CorruptionError(f"{where}: needs at least 'name' and 'format'")
        unknown = set(spec) - _CORRUPTION_KEYS
        if unknown:
            raise CorruptionError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_CORRUPTION_KEYS)}")
        args = dict(spec)
        name = str(args.pop("name"))
        if name in out:
            raise CorruptionError(f"{where}: corruption {name!r} defined twice")
        noise = args.pop("noise_cm", 0.0)
        noise = (float(noise), float(noise)) if isinstance(noise, (int, float)) else tuple(float(v) for v in noise)
        if len(noise) != 2:
            raise CorruptionError(f"{where}: noise_cm must be a number or [lo, hi]")
        occ = args.pop("occlusion", None) or {"kind": "none"}
        if isinstance(occ, str):
            occ = {"kind": occ}
        if set(occ) - _OCCLUSION_KEYS:
            raise CorruptionError(f"{where}: unknown occlusion keys {sorted(set(occ) - _OCCLUSION_KEYS)}")
        missing = [n for n in occ.get("limbs", []) if n not in limbs]
        if missing:
            raise CorruptionError(f"{where}: unknown limbs {missing}; defined limbs: {', '.join(limbs)}")
        bias = args.pop("bias", None)
        if bias is not None:
            if not (isinstance(bias, dict) and set(bias) == {"limbs", "cm"} and len(bias["cm"]) == 3):
                raise CorruptionError(f"{where}: bias must be {{limbs: [...], cm: [x, y, z]}}")
            missing = [n for n in bias["limbs"] if n not in limbs]
            if missing:
                raise CorruptionError(f"{where}: bias names unknown limbs {missing}; defined limbs: {', '.join(limbs)}")
            args["bias"] = (tuple(j for n in bias["limbs"] for j in limbs[n]), tuple(float(v) for v in bias["cm"]))
        try:
            occlusion = Occlusion(str(occ.get("kind", "none")), tuple((n, limbs[n]) for n in occ.get("limbs", [])),
                                  float(occ.get("fraction", 0.0)), float(occ.get("after_s", 0.0)))
            out[name] = Corruption(name=name, format_name=str(args.pop("format")), noise_cm=noise, occlusion=occlusion,
                                   **args)
        except (CorruptionError, ValueError, TypeError) as err:
            raise CorruptionError(f"{where}: {err}") from err
    return out
