"""Who is in a synthetic image and how they look in it: identities, per-image looks, keyed seeds.

An :class:`Identity` is a fixed set of shape and colour parameters spread over many regions (face
shape, skin tone, eyes, iris, brows, nose, mouth, lips, ears, hair, moles/freckles/wrinkles/blush
marks), so that a recognizer can still identify a face when FSErasing erases some of its regions. A
:class:`Look` is what changes per image: pose, expression, accessories, background, lighting, noise
and blur.

Identity ``k`` of stream ``s`` under seed ``S`` is drawn from ``np.random.default_rng([S, s, k,
0])`` and image ``j`` of it from ``[S, s, k, j + 1]`` (:func:`image_spec`), so any image can be
re-rendered alone and distinct streams never share an identity, whatever the seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fse_plugin.common import checks

__all__ = ["TRAIN", "HELDOUT", "PARSER", "X0", "HAIR_STYLES", "GLASSES_STYLES", "HEADWEAR_STYLES",
           "COLLARS", "Identity", "Look", "identity_of", "image_spec", "keyed_rng",
           "make_identities", "sample_look"]

TRAIN, HELDOUT, PARSER = 0, 1, 2
"""Identity streams: training records, held-out evaluation sets, FaceSynthetics-style parser
data."""
X0 = 56.0
"""Midline of the canonical aligned 112x112 frame in which faces are designed."""

HAIR_STYLES = ("short", "medium", "long", "bangs", "bald", "receding")
GLASSES_STYLES = ("round", "rect", "sun")
HEADWEAR_STYLES = ("cap", "beanie", "hat", "band")
COLLARS = ("crew", "v", "turtle", "shirt")

_SKIN_TONES = np.array([(255, 224, 196), (241, 194, 150), (224, 172, 120), (198, 134, 90),
                        (160, 100, 62), (112, 70, 45), (82, 52, 36)], np.float32)
_HAIR_COLOURS = np.array([(28, 24, 22), (58, 40, 28), (105, 72, 44), (140, 70, 35), (205, 170, 110),
                          (150, 150, 148), (222, 220, 212), (140, 40, 90), (40, 80, 150)],
                         np.float32)
_HAIR_P = np.array([0.3, 0.22, 0.16, 0.07, 0.1, 0.06, 0.04, 0.025, 0.025])
_IRIS_COLOURS = np.array([(52, 32, 20), (92, 58, 32), (128, 98, 52), (74, 112, 68), (66, 104, 164),
                          (112, 124, 136)], np.float32)


def keyed_rng(*key: int) -> np.random.Generator:
    """The generator of one key (seed, stream, identity, image ...): each draw is reproducible
    alone."""
    return np.random.default_rng([int(k) for k in key])


def _colour(rng: np.random.Generator, base: np.ndarray, jitter: float) -> tuple[int, ...]:
    return tuple(int(v) for v in np.clip(base + rng.normal(0, jitter, 3), 0, 255))


@dataclass(frozen=True, eq=False)
class Identity:
    """Everything that stays fixed across the images of one person (canonical 112-frame units)."""
    key: tuple[int, int, int]  # (seed, stream, index)
    face_w: float  # half width at the cheekbones
    face_sq: float  # jaw squareness (superellipse exponent)
    chin_narrow: float
    chin_y: float
    skull_top: float
    depth: float  # face depth used by yaw/pitch
    skin: tuple[int, ...]
    eye_dx: float  # half distance between eye centres
    eye_y: float
    eye_w: float  # half length of the eye opening
    eye_h: float  # half height of the eye opening
    eye_tilt: float  # outer corner up (+) / down (-)
    iris: tuple[int, ...]
    iris_r: float  # iris radius / eye_w
    brow_gap: float
    brow_thick: float
    brow_len: float
    brow_arch: float
    brow_slope: float
    brow_colour: tuple[int, ...]
    nose_w: float  # half width of the alae
    nose_bridge: float
    nose_tip: float  # y of the tip
    nose_shade: float
    mouth_w: float  # half width
    mouth_y: float
    lip_up: float
    lip_lo: float
    lip_colour: tuple[int, ...]
    ear_w: float
    ear_h: float
    ear_dy: float
    hair_colour: tuple[int, ...]
    hair_style: str
    hairline: float
    hair_volume: float
    hair_part: float
    neck_ratio: float
    moles: np.ndarray  # [k, 3] x, y, radius
    freckles: np.ndarray  # [m, 2]
    freckle_colour: tuple[int, ...]
    wrinkles: int  # forehead lines
    blush: float
    dimple: bool
    glasses: str | None  # habitual glasses style
    headwear: str | None  # habitual headwear
    clothing: tuple[int, ...]

    @property
    def label(self) -> int:
        return self.key[2]


def _sample_identity(key: tuple[int, int, int]) -> Identity:
    rng = keyed_rng(*key, 0)
    u = rng.uniform
    t = u(0, len(_SKIN_TONES) - 1)
    lo = int(t)
    skin = (_SKIN_TONES[lo]
            + (_SKIN_TONES[min(lo + 1, len(_SKIN_TONES) - 1)] - _SKIN_TONES[lo]) * (t - lo))
    skin_c = _colour(rng, skin, 6)
    hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_P)]
    hair_c = _colour(rng, hair, 10)
    brow_c = _colour(rng, np.minimum(hair * 0.8, np.array(skin) * 0.45) if rng.random() < 0.8
                     else hair * 0.7, 6)
    face_w = u(33, 41)
    chin_y = u(105, 116)
    mouth_y = u(89.5, 95)
    # moles anywhere on the face skin, freckles over nose and cheeks
    n_moles = rng.choice(5, p=[0.25, 0.3, 0.2, 0.15, 0.1])
    moles = np.stack([X0 + u(-face_w * 0.8, face_w * 0.8, n_moles), u(22, chin_y - 6, n_moles),
                      u(0.6, 1.5, n_moles)], 1) if n_moles else np.zeros((0, 3))
    n_fr = int(rng.integers(15, 45)) if rng.random() < 0.3 else 0
    freckles = np.stack([X0 + u(-26, 26, n_fr), u(56, 76, n_fr)], 1) if n_fr else np.zeros((0, 2))
    return Identity(
        key=key, face_w=face_w, face_sq=u(2.0, 3.2), chin_narrow=u(0.0, 0.35), chin_y=chin_y,
        skull_top=u(-12, -3), depth=u(24, 32), skin=skin_c,
        eye_dx=u(15.5, 19.5), eye_y=u(49.5, 53.5), eye_w=u(5.0, 7.2), eye_h=u(1.9, 3.1),
        eye_tilt=u(-1.6, 1.8),
        iris=_colour(rng, _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))], 8), iris_r=u(0.42, 0.58),
        brow_gap=u(7.0, 10.5), brow_thick=u(1.8, 4.2), brow_len=u(14, 20), brow_arch=u(0.5, 3.8),
        brow_slope=u(-2.5, 2.5), brow_colour=brow_c,
        nose_w=u(6.0, 9.5), nose_bridge=u(2.6, 4.4), nose_tip=u(69.0, 75.0),
        nose_shade=u(0.8, 0.95), mouth_w=u(11.5, 17.0), mouth_y=mouth_y, lip_up=u(1.5, 4.0),
        lip_lo=u(2.2, 5.5),
        lip_colour=_colour(rng, np.array(skin_c) * u(0.35, 0.6)
                           + np.array((200, 70, 80)) * u(0.25, 0.5), 6),
        ear_w=u(6.5, 10.5), ear_h=u(14.0, 22.0), ear_dy=u(-3.0, 3.0),
        hair_colour=hair_c,
        hair_style=str(rng.choice(HAIR_STYLES, p=[0.28, 0.2, 0.2, 0.14, 0.08, 0.1])),
        hairline=u(13, 24), hair_volume=u(1.04, 1.2), hair_part=u(-12, 12),
        neck_ratio=u(0.55, 0.7), moles=moles, freckles=freckles,
        freckle_colour=_colour(rng, np.array(skin_c) * 0.72, 4),
        wrinkles=int(rng.choice(4, p=[0.6, 0.15, 0.15, 0.1])),
        blush=u(0, 0.35) if rng.random() < 0.5 else 0.0, dimple=bool(rng.random() < 0.2),
        glasses=str(rng.choice(GLASSES_STYLES[:2])) if rng.random() < 0.22 else None,
        headwear=str(rng.choice(HEADWEAR_STYLES)) if rng.random() < 0.15 else None,
        clothing=_colour(rng, rng.uniform(20, 235, 3), 0),
    )


def make_identities(n: int, seed: int, start: int = 0, stream: int = TRAIN) -> list[Identity]:
    """Identities ``start .. start+n-1`` of ``stream`` under ``seed`` (each drawn independently)."""
    checks.count(n, "n", minimum=0)
    return [_sample_identity((int(seed), int(stream), start + i)) for i in range(n)]


@dataclass(frozen=True)
class Look:
    """Everything that changes per image of an identity (angles in degrees)."""
    yaw: float
    pitch: float
    roll: float
    # aligned frame residual: dx, dy (112 px), log-scale, rotation
    jitter: tuple[float, float, float, float]
    # loose frame: face scale, rotation, dx, dy (fractions of size)
    loose: tuple[float, float, float, float]
    mouth_open: float
    smile: float
    eye_open: float
    brow_raise: float
    gaze: tuple[float, float]
    hair_style: str
    hair_volume: float
    hair_len: float
    hair_over_ears: bool
    glasses: str | None
    glasses_colour: tuple[int, ...]
    # lens half-width extra, lens half-height, rim thickness
    glasses_size: tuple[float, float, float]
    headwear: str | None
    headwear_colour: tuple[int, ...]
    headwear_y: float
    collar: str
    collar_y: float
    clothing_colour: tuple[int, ...]
    background: tuple[tuple[int, ...], tuple[int, ...], float]
    clutter: int
    light: tuple[float, float, float]  # direction, strength, brightness
    tint: tuple[float, float, float]
    noise: float
    blur: float
    noise_seed: int


def sample_look(identity: Identity, rng: np.random.Generator) -> Look:
    """Draw pose, expression, accessories and photometry for one image of ``identity``."""
    u = rng.uniform
    style = identity.hair_style if rng.random() > 0.1 else str(rng.choice(HAIR_STYLES))
    if identity.glasses is not None:
        glasses = ((identity.glasses if rng.random() < 0.85 else "sun") if rng.random() < 0.75
                   else None)
    else:
        glasses = str(rng.choice(GLASSES_STYLES)) if rng.random() < 0.08 else None
    head_p = 0.6 if identity.headwear is not None else 0.08
    headwear = ((identity.headwear or str(rng.choice(HEADWEAR_STYLES))) if rng.random() < head_p
                else None)
    mouth_open = float(u(0.15, 1.0)) if rng.random() < 0.35 else 0.0
    blink = rng.random() < 0.06
    bg1 = rng.uniform(0, 255, 3)
    return Look(
        yaw=float(np.clip(rng.normal(0, 12), -35, 35)),
        pitch=float(np.clip(rng.normal(0, 7), -20, 20)),
        roll=float(np.clip(rng.normal(0, 8), -25, 25)),
        jitter=(float(rng.normal(0, 1.2)), float(rng.normal(0, 1.2)), float(rng.normal(0, 0.03)),
                float(rng.normal(0, 2.0))),
        loose=(float(u(0.65, 0.9)), float(rng.normal(0, 8)), float(u(-0.06, 0.06)),
               float(u(-0.06, 0.06))),
        mouth_open=mouth_open, smile=float(u(-0.3, 1.0)),
        eye_open=0.05 if blink else float(u(0.75, 1.25)), brow_raise=float(rng.normal(0, 0.5)),
        gaze=(float(rng.normal(0, 0.12)), float(rng.normal(0, 0.08))), hair_style=style,
        hair_volume=float(identity.hair_volume * u(0.97, 1.03)),
        hair_len=float(u(20, 90)), hair_over_ears=bool(rng.random() < 0.7), glasses=glasses,
        glasses_colour=_colour(rng, rng.uniform(0, 120, 3), 0),
        glasses_size=(float(u(2.5, 4.5)), float(u(4.5, 7.5)), float(u(1.0, 1.8))),
        headwear=headwear, headwear_colour=_colour(rng, rng.uniform(0, 255, 3), 0),
        headwear_y=float(u(-3, 7)), collar=str(rng.choice(COLLARS, p=[0.35, 0.2, 0.25, 0.2])),
        collar_y=float(u(0, 1)),
        clothing_colour=(identity.clothing if rng.random() < 0.5
                         else _colour(rng, rng.uniform(10, 245, 3), 0)),
        background=(_colour(rng, bg1, 0), _colour(rng, bg1, 50), float(u(0, 2 * math.pi))),
        clutter=int(rng.integers(0, 4)),
        light=(float(u(0, 2 * math.pi)), float(u(0, 0.35)), float(u(0.75, 1.15))),
        tint=tuple(float(v) for v in rng.uniform(0.92, 1.08, 3)),
        noise=float(u(0, 6)), blur=float(u(0.4, 1.0)) if rng.random() < 0.3 else 0.0,
        noise_seed=int(rng.integers(2 ** 31)),
    )


@lru_cache(maxsize=4096)
def identity_of(seed: int, stream: int, ident: int) -> Identity:
    """Identity ``ident`` of ``stream`` under ``seed`` (cached: writers render many images per
    identity)."""
    return _sample_identity((int(seed), int(stream), int(ident)))


def image_spec(seed: int, stream: int, ident: int, image: int) -> tuple[Identity, Look]:
    """Identity and look of image ``image`` of identity ``ident`` as the writers render it (e.g. to
    re-render a record at another size or frame, or without the alignment jitter)."""
    idn = identity_of(seed, stream, ident)
    return idn, sample_look(idn, keyed_rng(seed, stream, ident, image + 1))
