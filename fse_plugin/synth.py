"""Procedural synthetic faces with exact 25-class masks and landmarks, deterministic by seed.

Why: every stage of the pipeline (record IO, parser, mask cache, FSErasing, FS-CAM, evaluation) needs
faces whose region masks are known exactly and whose identities are known, without downloading
MS1M or FaceSynthetics. The faces need not look photo-real; they must be *testable*:

- An ``Identity`` is a fixed set of shape and colour parameters spread over many regions (face shape,
  skin tone, eyes, iris, brows, nose, mouth, lips, ears, hair, moles/freckles/wrinkles/blush marks), so
  that a recognizer can still identify a face when FSErasing erases some of its regions.
- A ``Look`` is what changes per image: pose (yaw/pitch/roll), expression (open mouth shows the 'mouth'
  class, smile, blink, raised brows, gaze), accessories (glasses, headwear, hair style, clothing),
  background, lighting, noise and blur.
- Geometry lives in the canonical aligned 112x112 frame (eyes, nose and mouth near
  ``align.ARCFACE_TEMPLATE``) as 3-D points; the head is turned by an orthographic rotation (so yaw moves
  the nose more than the face outline and hides the far ear) and then mapped to the output by a
  similarity: the ArcFace alignment of its own 68 landmarks (``frame='aligned'``) or a larger loose crop
  (``frame='loose'``, FaceSynthetics / IJB style). Parts are drawn back to front into image and mask
  together, so the mask is exactly what is visible.

Left/right are the subject's sides: in a frontal face the subject's right eye (id 11) is on the
image-left. Landmarks are 68 iBUG points (point 0 on the image-left) plus the right pupil (row 68,
image-left) and the left pupil (row 69).

Identity streams keep data sets apart: identity ``k`` of stream ``s`` under seed ``S`` is drawn from
``np.random.default_rng([S, s, k, 0])`` and image ``j`` of it from ``[S, s, k, j + 1]``. Training records
(``write_rec``) use ``TRAIN``; verification packs and IJB sets use ``HELDOUT``; FaceSynthetics-style
parser data uses ``PARSER``. Distinct streams never share an identity, whatever the seeds.
"""
from __future__ import annotations

import csv
import math
import multiprocessing
import os
import pickle
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from fse_plugin.align import ARCFACE_TEMPLATE, align_mask, five_points_from_68, similarity_transform
from fse_plugin.labels import CLASSES, L25_TO_FS19, SKIN_IDS

TRAIN, HELDOUT, PARSER = 0, 1, 2
_PAIR_STREAM = 101  # pair selection of write_pairs_bin
_IJB_STREAM = 102  # template/pair layout of write_ijb

_C = {n: i for i, n in enumerate(CLASSES)}
X0 = 56.0  # midline of the canonical frame
_SHIFT = 4  # cv2 sub-pixel bits
_ONE = 1 << _SHIFT

HAIR_STYLES = ("short", "medium", "long", "bangs", "bald", "receding")
GLASSES_STYLES = ("round", "rect", "sun")
HEADWEAR_STYLES = ("cap", "beanie", "hat", "band")
COLLARS = ("crew", "v", "turtle", "shirt")

_SKIN_TONES = np.array([(255, 224, 196), (241, 194, 150), (224, 172, 120), (198, 134, 90),
                        (160, 100, 62), (112, 70, 45), (82, 52, 36)], np.float32)
_HAIR_COLOURS = np.array([(28, 24, 22), (58, 40, 28), (105, 72, 44), (140, 70, 35), (205, 170, 110),
                          (150, 150, 148), (222, 220, 212), (140, 40, 90), (40, 80, 150)], np.float32)
_HAIR_P = np.array([0.3, 0.22, 0.16, 0.07, 0.1, 0.06, 0.04, 0.025, 0.025])
_IRIS_COLOURS = np.array([(52, 32, 20), (92, 58, 32), (128, 98, 52), (74, 112, 68), (66, 104, 164),
                          (112, 124, 136)], np.float32)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _colour(rng: np.random.Generator, base: np.ndarray, jitter: float) -> tuple[int, ...]:
    return tuple(int(v) for v in np.clip(base + rng.normal(0, jitter, 3), 0, 255))


# ----------------------------------------------------------------------------------------------
# identities and looks
# ----------------------------------------------------------------------------------------------
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
    rng = _rng(*key, 0)
    u = rng.uniform
    t = u(0, len(_SKIN_TONES) - 1)
    lo = int(t)
    skin = _SKIN_TONES[lo] + (_SKIN_TONES[min(lo + 1, len(_SKIN_TONES) - 1)] - _SKIN_TONES[lo]) * (t - lo)
    skin_c = _colour(rng, skin, 6)
    hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_P)]
    hair_c = _colour(rng, hair, 10)
    brow_c = _colour(rng, np.minimum(hair * 0.8, np.array(skin) * 0.45) if rng.random() < 0.8 else hair * 0.7, 6)
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
        eye_tilt=u(-1.6, 1.8), iris=_colour(rng, _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))], 8),
        iris_r=u(0.42, 0.58),
        brow_gap=u(7.0, 10.5), brow_thick=u(1.8, 4.2), brow_len=u(14, 20), brow_arch=u(0.5, 3.8),
        brow_slope=u(-2.5, 2.5), brow_colour=brow_c,
        nose_w=u(6.0, 9.5), nose_bridge=u(2.6, 4.4), nose_tip=u(69.0, 75.0), nose_shade=u(0.8, 0.95),
        mouth_w=u(11.5, 17.0), mouth_y=mouth_y, lip_up=u(1.5, 4.0), lip_lo=u(2.2, 5.5),
        lip_colour=_colour(rng, np.array(skin_c) * u(0.35, 0.6) + np.array((200, 70, 80)) * u(0.25, 0.5), 6),
        ear_w=u(6.5, 10.5), ear_h=u(14.0, 22.0), ear_dy=u(-3.0, 3.0),
        hair_colour=hair_c, hair_style=str(rng.choice(HAIR_STYLES, p=[0.28, 0.2, 0.2, 0.14, 0.08, 0.1])),
        hairline=u(13, 24), hair_volume=u(1.04, 1.2), hair_part=u(-12, 12),
        neck_ratio=u(0.55, 0.7), moles=moles, freckles=freckles,
        freckle_colour=_colour(rng, np.array(skin_c) * 0.72, 4),
        wrinkles=int(rng.choice(4, p=[0.6, 0.15, 0.15, 0.1])), blush=u(0, 0.35) if rng.random() < 0.5 else 0.0,
        dimple=bool(rng.random() < 0.2),
        glasses=str(rng.choice(GLASSES_STYLES[:2])) if rng.random() < 0.22 else None,
        headwear=str(rng.choice(HEADWEAR_STYLES)) if rng.random() < 0.15 else None,
        clothing=_colour(rng, rng.uniform(20, 235, 3), 0),
    )


def make_identities(n: int, seed: int, start: int = 0, stream: int = TRAIN) -> list[Identity]:
    """Identities ``start .. start+n-1`` of ``stream`` under ``seed`` (each drawn independently)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [_sample_identity((int(seed), int(stream), start + i)) for i in range(n)]


@dataclass(frozen=True)
class Look:
    """Everything that changes per image of an identity (angles in degrees)."""
    yaw: float
    pitch: float
    roll: float
    jitter: tuple[float, float, float, float]  # aligned frame residual: dx, dy (112 px), log-scale, rotation
    loose: tuple[float, float, float, float]  # loose frame: face scale, rotation, dx, dy (fractions of size)
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
    glasses_size: tuple[float, float, float]  # lens half-width extra, lens half-height, rim thickness
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
        glasses = (identity.glasses if rng.random() < 0.85 else "sun") if rng.random() < 0.75 else None
    else:
        glasses = str(rng.choice(GLASSES_STYLES)) if rng.random() < 0.08 else None
    head_p = 0.6 if identity.headwear is not None else 0.08
    headwear = (identity.headwear or str(rng.choice(HEADWEAR_STYLES))) if rng.random() < head_p else None
    mouth_open = float(u(0.15, 1.0)) if rng.random() < 0.35 else 0.0
    blink = rng.random() < 0.06
    bg1 = rng.uniform(0, 255, 3)
    return Look(
        yaw=float(np.clip(rng.normal(0, 12), -35, 35)), pitch=float(np.clip(rng.normal(0, 7), -20, 20)),
        roll=float(np.clip(rng.normal(0, 8), -25, 25)),
        jitter=(float(rng.normal(0, 1.2)), float(rng.normal(0, 1.2)), float(rng.normal(0, 0.03)),
                float(rng.normal(0, 2.0))),
        loose=(float(u(0.65, 0.9)), float(rng.normal(0, 8)), float(u(-0.06, 0.06)), float(u(-0.06, 0.06))),
        mouth_open=mouth_open, smile=float(u(-0.3, 1.0)), eye_open=0.05 if blink else float(u(0.75, 1.25)),
        brow_raise=float(rng.normal(0, 0.5)), gaze=(float(rng.normal(0, 0.12)), float(rng.normal(0, 0.08))),
        hair_style=style, hair_volume=float(identity.hair_volume * u(0.97, 1.03)), hair_len=float(u(20, 90)),
        hair_over_ears=bool(rng.random() < 0.7),
        glasses=glasses, glasses_colour=_colour(rng, rng.uniform(0, 120, 3), 0),
        glasses_size=(float(u(2.5, 4.5)), float(u(4.5, 7.5)), float(u(1.0, 1.8))),
        headwear=headwear, headwear_colour=_colour(rng, rng.uniform(0, 255, 3), 0), headwear_y=float(u(-3, 7)),
        collar=str(rng.choice(COLLARS, p=[0.35, 0.2, 0.25, 0.2])), collar_y=float(u(0, 1)),
        clothing_colour=identity.clothing if rng.random() < 0.5 else _colour(rng, rng.uniform(10, 245, 3), 0),
        background=(_colour(rng, bg1, 0), _colour(rng, bg1, 50), float(u(0, 2 * math.pi))),
        clutter=int(rng.integers(0, 4)),
        light=(float(u(0, 2 * math.pi)), float(u(0, 0.35)), float(u(0.75, 1.15))),
        tint=tuple(float(v) for v in rng.uniform(0.92, 1.08, 3)),
        noise=float(u(0, 6)), blur=float(u(0.4, 1.0)) if rng.random() < 0.3 else 0.0,
        noise_seed=int(rng.integers(2 ** 31)),
    )


# ----------------------------------------------------------------------------------------------
# geometry (canonical 112 frame, 3-D points; z toward the camera)
# ----------------------------------------------------------------------------------------------
def _curve(ctrl: np.ndarray, n: int) -> np.ndarray:
    """Bezier curve through control points (quadratic or cubic), n samples."""
    t = np.linspace(0, 1, n)[:, None]
    c = np.asarray(ctrl, np.float64)
    if len(c) == 3:
        return (1 - t) ** 2 * c[0] + 2 * (1 - t) * t * c[1] + t ** 2 * c[2]
    return (1 - t) ** 3 * c[0] + 3 * (1 - t) ** 2 * t * c[1] + 3 * (1 - t) * t ** 2 * c[2] + t ** 3 * c[3]


@lru_cache(maxsize=512)
def _unit(n: int, t0: float, t1: float, power: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(t0, t1, n, endpoint=(t1 - t0) < 2 * math.pi - 1e-9)
    c, s = np.cos(t), np.sin(t)
    return np.sign(c) * np.abs(c) ** (2 / power), np.sign(s) * np.abs(s) ** (2 / power)


def _ellipse(cx: float, cy: float, ax: float, ay: float, n: int = 16, rot: float = 0.0,
             t0: float = 0.0, t1: float = 2 * math.pi, power: float = 2.0) -> np.ndarray:
    """Points on a (super)ellipse; power > 2 gives rounded rectangles."""
    ux, uy = _unit(n, float(t0), float(t1), float(power))
    x, y = ax * ux, ay * uy
    if rot:
        cr, sr = math.cos(rot), math.sin(rot)
        x, y = x * cr - y * sr, x * sr + y * cr
    return np.stack([cx + x, cy + y], 1)


def _mirror(p: np.ndarray) -> np.ndarray:
    q = np.array(p, np.float64, copy=True)
    q[:, 0] = 2 * X0 - q[:, 0]
    return q


class _Geo:
    """Collects named parts (canonical 2-D points with a depth): z = head surface + offset, or as given."""

    def __init__(self, idn: Identity, chin_y: float):
        self.idn = idn
        self.yc = (idn.skull_top + chin_y) / 2
        self.hy = (chin_y - idn.skull_top) / 2 * 1.08
        self.names: list[str] = []
        self.pts: list[np.ndarray] = []
        self.zs: list[np.ndarray] = []
        self.on_surface: list[bool] = []

    def z(self, pts: np.ndarray) -> np.ndarray:
        """Depth of the head surface (an ellipsoid) under canonical points; 0 outside the face."""
        u = (pts[:, 0] - X0) / (self.idn.face_w * 1.08)
        v = (pts[:, 1] - self.yc) / self.hy
        return self.idn.depth * np.sqrt(np.clip(1 - u * u - v * v, 0, None))

    def surface(self, name: str, pts: np.ndarray | list, off: float | np.ndarray = 0.0) -> None:
        self.add(name, pts, off, on_surface=True)

    def add(self, name: str, pts: np.ndarray | list, z: float | np.ndarray, on_surface: bool = False) -> None:
        pts = np.asarray(pts, np.float64)
        self.names.append(name)
        self.pts.append(pts)
        self.zs.append(np.full(len(pts), z) if np.ndim(z) == 0 else np.asarray(z, np.float64))
        self.on_surface.append(on_surface)

    def finish(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(names, cumulative ends, all points N x 3), surface depths computed in one pass."""
        sizes = [len(p) for p in self.pts]
        flat = np.empty((sum(sizes), 3))
        flat[:, :2] = np.concatenate(self.pts)
        flat[:, 2] = np.concatenate(self.zs) + np.repeat(self.on_surface, sizes) * self.z(flat[:, :2])
        return self.names, np.cumsum(sizes), flat


def _build(idn: Identity, lk: Look) -> tuple[list[str], np.ndarray, np.ndarray]:
    """All parts of one face in the canonical frame (see ``_Geo.finish``); the last part is 'ldmk' (70)."""
    o = 9.0 * lk.mouth_open  # mouth opening (jaw drop) in px
    chin_y = idn.chin_y + 0.6 * o
    g = _Geo(idn, chin_y)
    fw, ey = idn.face_w, idn.eye_y
    jt = ey + 1.0  # where the jaw curve starts (iBUG point 0 height)
    lm = np.zeros((70, 2))
    lz = np.zeros(70)

    # face outline: jaw (iBUG 0..16) and the skull arc back over the top
    th = np.linspace(0, math.pi / 2, 9)
    e = 2 / idn.face_sq
    jx = fw * np.cos(th) ** e * (1 - idn.chin_narrow * np.sin(th) ** 4)
    jy = jt + (chin_y - jt) * np.sin(th) ** e
    jaw = np.concatenate([np.stack([X0 - jx, jy], 1), _mirror(np.stack([X0 - jx, jy], 1)[-2::-1])])
    lm[:17] = jaw
    skull = _ellipse(X0, jt, fw, jt - idn.skull_top, 15, t0=0, t1=-math.pi)[1:-1]
    g.add("face", np.concatenate([jaw, skull]), 0.0)

    # hair behind the head (long styles), neck, clothing
    style = lk.hair_style
    vol = lk.hair_volume
    if style in ("long", "medium"):
        bottom = chin_y + (lk.hair_len if style == "long" else lk.hair_len * 0.25)
        wb = fw * vol * 1.12
        back = np.concatenate([_ellipse(X0, jt, wb, (jt - idn.skull_top) * vol + 2, 13, t0=0, t1=-math.pi),
                               [[X0 - wb - 2, bottom], [X0 + wb + 2, bottom]]])
        g.add("hair_back", back, -25.0)
    nw = fw * idn.neck_ratio
    g.add("neck", [[X0 - nw, chin_y - 24], [X0 + nw, chin_y - 24], [X0 + nw * 1.05, chin_y + 20],
                   [X0 + nw * 1.3, 400], [X0 - nw * 1.3, 400], [X0 - nw * 1.05, chin_y + 20]], -10.0)
    if lk.collar == "turtle":
        yn = chin_y + 1 + 6 * lk.collar_y
        neckline = [[X0 - nw * 1.2, yn - 3], [X0, yn], [X0 + nw * 1.2, yn - 3]]
    elif lk.collar == "v":
        yn = chin_y + 8 + 14 * lk.collar_y
        neckline = [[X0 - nw * 1.1, yn], [X0, yn + 12 + 14 * lk.collar_y], [X0 + nw * 1.1, yn]]
    elif lk.collar == "shirt":
        yn = chin_y + 6 + 10 * lk.collar_y
        neckline = [[X0 - nw * 1.15, yn - 6], [X0 - nw * 0.3, yn + 8], [X0, yn + 14], [X0 + nw * 0.3, yn + 8],
                    [X0 + nw * 1.15, yn - 6]]
    else:
        yn = chin_y + 8 + 16 * lk.collar_y
        neckline = _curve([[X0 - nw * 1.1, yn], [X0, yn + 16], [X0 + nw * 1.1, yn]], 7)
    right_sh = [[X0 + nw * 1.1 + 14, yn + 3], [X0 + 72, yn + 14], [X0 + 118, yn + 40], [X0 + 220, yn + 90],
                [X0 + 220, 420]]
    g.add("clothing", np.concatenate([neckline, right_sh, _mirror(np.array(right_sh))[::-1]]), -4.0)

    # ears (drawn before the face, which covers their inner part)
    ear_y = ey + 8 + idn.ear_dy
    for side, name in ((-1, "ear_r"), (1, "ear_l")):
        ex = X0 + side * (fw + idn.ear_w * 0.12)
        g.add(name, _ellipse(ex, ear_y, idn.ear_w / 2, idn.ear_h / 2, 14, rot=side * 0.15), -6.0)
        g.add(name + "_in", _ellipse(ex + side * idn.ear_w * 0.12, ear_y + 1, idn.ear_w * 0.22,
                                     idn.ear_h * 0.3, 10, rot=side * 0.15), -6.0)

    # long hair hanging beside the face (in front of the ears unless tucked behind them)
    if style in ("long", "medium") and lk.hair_over_ears:
        end = chin_y + (lk.hair_len * 0.8 if style == "long" else -8 + lk.hair_len * 0.1)
        strand = np.array([[X0 - fw * 0.9, ey - 18], [X0 - fw * vol * 1.12, ey - 4], [X0 - fw * 1.22, ey + 20],
                           [X0 - fw * 1.25, end], [X0 - fw * 0.95, end - 4], [X0 - fw * 0.9, ey + 12]])
        g.add("strand_r", strand, -2.0)
        g.add("strand_l", _mirror(strand), -2.0)

    # skin sub-regions: cheeks by the midline, foreheads, around-eyes and chins on top
    brow_low = ey - idn.brow_gap - 2.5 * lk.brow_raise
    y_fh = brow_low - idn.brow_thick - idn.brow_arch - 1.5
    gm = 7.5  # half width of the middle forehead strip
    inner = X0 - idn.eye_dx + idn.eye_w + 2.0  # inner edge of the right around-eye region
    midline = np.array([[X0, -90], [X0, ey - 4], [X0, ey + 20], [X0, chin_y + 10], [X0, 420]])
    g.surface("sk_half_r", np.concatenate([midline, [[-200, 420], [-200, -90]]]))
    g.surface("sk_half_l", np.concatenate([midline, [[300, 420], [300, -90]]]))
    fh_r = np.array([[-90, -90], [X0 - gm, -90], [X0 - gm, y_fh], [-90, y_fh + 4]])
    g.surface("sk_fh_r", fh_r)
    g.surface("sk_fh_l", _mirror(fh_r))
    g.surface("sk_fh_m", [[X0 - gm, -90], [X0 + gm, -90], [X0 + gm, y_fh], [X0 + 3.5, ey + 2], [X0 - 3.5, ey + 2],
                          [X0 - gm, y_fh]])
    ae_r = np.array([[-90, y_fh + 4], [X0 - gm, y_fh], [X0 - 3.5, ey + 2], [inner - 1, ey + 7],
                     [X0 - idn.eye_dx, ey + 9.5], [X0 - idn.eye_dx - idn.eye_w - 4, ey + 8], [-90, ey + 6]])
    g.surface("sk_ae_r", ae_r)
    g.surface("sk_ae_l", _mirror(ae_r))
    mw = idn.mouth_w * (1 + 0.1 * lk.smile)
    my = idn.mouth_y
    ch_r = np.array([[X0, my + 1.5 + o + idn.lip_lo], [X0 - mw - 2, my + 1 + 0.5 * o], lm[4],
                     [-90, lm[4, 1] + 10], [-90, 420], [X0, 420]])
    g.surface("sk_ch_r", ch_r)
    g.surface("sk_ch_l", _mirror(ch_r))

    # skin marks (image only): moles, freckles, forehead wrinkles, blush, dimple
    if len(idn.moles):
        g.surface("moles", idn.moles[:, :2], 0.5)
    if len(idn.freckles):
        g.surface("freckles", idn.freckles, 0.5)
    for k in range(idn.wrinkles):
        yw = (idn.hairline + y_fh) / 2 + (k - idn.wrinkles / 2) * 4
        g.surface(f"wrinkle{k}", _curve([[X0 - 14, yw + 1], [X0, yw - 1.5], [X0 + 14, yw + 1]], 7), 0.5)
    if idn.blush > 0:
        g.surface("blush_r", _ellipse(X0 - idn.eye_dx - 2, ey + 16, 7, 4.5, 10), 0.3)
        g.surface("blush_l", _ellipse(X0 + idn.eye_dx + 2, ey + 16, 7, 4.5, 10), 0.3)
    if idn.dimple:
        g.surface("dimple", [[X0 - 1.5, chin_y - 6], [X0 + 1.5, chin_y - 6]], 0.5)

    # nose
    tip, base = idn.nose_tip, idn.nose_tip + 4.0
    aw, bw = idn.nose_w, idn.nose_bridge
    half = np.array([[X0, ey - 2], [X0 - bw * 0.8, ey - 2], [X0 - bw, (ey + tip) / 2], [X0 - aw * 0.75, tip - 3],
                     [X0 - aw, tip + 0.5], [X0 - aw * 0.8, base - 0.5], [X0 - aw * 0.35, base + 0.3]])
    zoff = np.array([4, 4, 7, 9, 5, 5, 8.0])
    nose = np.concatenate([half, [[X0, base + 0.6]], _mirror(half[::-1])])[1:]
    nz = np.concatenate([zoff, [9.0], zoff[::-1]])[1:]
    g.surface("nose", nose, nz)
    for side, name in ((-1, "nostril_r"), (1, "nostril_l")):
        g.surface(name, _ellipse(X0 + side * aw * 0.45, base - 1.2, aw * 0.28, 1.0, 8), 8.0)
    g.surface("nose_hl", [[X0, ey + 4], [X0, tip - 1]], 10.0)
    lm[27:31] = np.stack([np.full(4, X0), ey + (tip - ey) * np.arange(4) / 3], 1)
    lz[27:31] = [4, 7, 10, 13]
    lm[31:36] = [[X0 - aw * 0.7, base - 1], [X0 - aw * 0.35, base], [X0, base + 0.4], [X0 + aw * 0.35, base],
                 [X0 + aw * 0.7, base - 1]]
    lz[31:36] = [6, 8, 9, 8, 6]

    # mouth: contours over u in [-1, 1]
    uu = np.linspace(-1, 1, 15)
    w = 1 - uu ** 2
    cy = my - lk.smile * 2.5 * uu ** 2
    x = X0 + mw * uu
    up_out = np.stack([x, cy - idn.lip_up * w ** 0.6 + 0.5 * idn.lip_up * np.exp(-(uu / 0.12) ** 2)], 1)
    up_in = np.stack([x, cy - (0.3 + 0.15 * o) * w], 1)
    lo_in = np.stack([x, cy + (0.3 + o) * w ** 0.8], 1)
    lo_out = np.stack([x, lo_in[:, 1] + idn.lip_lo * w ** 0.6], 1)
    lipz = 1 + 4 * w
    g.surface("lip_up", np.concatenate([up_out, up_in[::-1]]), np.concatenate([lipz, lipz[::-1]]))
    g.surface("lip_lo", np.concatenate([lo_in, lo_out[::-1]]), np.concatenate([lipz, lipz[::-1]]))
    if o > 0.7:
        g.surface("mouth", np.concatenate([up_in, lo_in[::-1]]), np.concatenate([lipz, lipz[::-1]]) - 1)
        g.surface("teeth", np.concatenate([up_in[2:-2], up_in[-3:1:-1] + [0, min(0.45 * o, 3.0)]]), 3.0)

    def at(curve: np.ndarray, us: Sequence[float]) -> np.ndarray:
        return np.stack([np.interp(us, uu, curve[:, 0]), np.interp(us, uu, curve[:, 1])], 1)

    lm[48], lm[54] = up_out[0], up_out[-1]
    lm[49:54] = at(up_out, [-0.62, -0.28, 0, 0.28, 0.62])
    lm[55:60] = at(lo_out, [0.62, 0.28, 0, -0.28, -0.62])
    lm[60], lm[64] = at(up_in, [-0.9])[0], at(up_in, [0.9])[0]
    lm[61:64] = at(up_in, [-0.4, 0, 0.4])
    lm[65:68] = at(lo_in, [0.4, 0, -0.4])
    lz[48:68] = 3

    # eyes (iBUG 36..41 image-left = subject's right, 42..47) and pupils (68, 69)
    h = idn.eye_h * lk.eye_open * (1 - 0.15 * max(lk.smile, 0))
    for side, name, first in ((-1, "eye_r", 36), (1, "eye_l", 42)):
        ex = X0 + side * idn.eye_dx
        outer = np.array([ex + side * idn.eye_w, ey - idn.eye_tilt])
        inn = np.array([ex - side * idn.eye_w, ey + 0.3])
        mid = (outer + inn) / 2
        upper = _curve([outer, mid + [side * 0.15 * idn.eye_w, -2.2 * h], inn], 9)
        lower = _curve([inn, mid + [side * 0.1 * idn.eye_w, 1.6 * h], outer], 9)
        g.surface(name, np.concatenate([upper, lower[1:-1]]), -1.0)
        g.surface(name + "_lash", upper, -0.5)
        pupil = np.array([ex + lk.gaze[0] * idn.eye_w, mid[1] + lk.gaze[1] * idn.eye_w])
        g.surface(name + "_iris", _ellipse(pupil[0], pupil[1], idn.iris_r * idn.eye_w, idn.iris_r * idn.eye_w, 12), 0)
        g.surface(name + "_pupil", _ellipse(pupil[0], pupil[1], idn.iris_r * idn.eye_w * 0.45,
                                            idn.iris_r * idn.eye_w * 0.45, 8), 0.2)
        if side < 0:  # image-left eye: outer corner first
            lm[36:42] = [upper[0], upper[3], upper[5], upper[8], lower[3], lower[5]]
        else:  # image-right eye: inner corner first (iBUG order runs left to right)
            lm[42:48] = [upper[8], upper[5], upper[3], upper[0], lower[5], lower[3]]
        lm[68 if side < 0 else 69] = pupil
        lz[first:first + 6] = -1

    # brows (17..21 image-left brow outer->inner, 22..26 inner->outer)
    for side, name in ((-1, "brow_r"), (1, "brow_l")):
        t = np.linspace(0, 1, 9)
        xin = X0 + side * (idn.eye_dx - idn.eye_w + 1.0)
        bx = xin + side * idn.brow_len * t
        by = brow_low - idn.brow_arch * np.sin(math.pi * t ** 0.8) + idn.brow_slope * t
        thick = idn.brow_thick * (1 - 0.45 * t)
        g.surface(name, np.concatenate([np.stack([bx, by], 1), np.stack([bx, by - thick], 1)[::-1]]), 1.0)
        centre = np.stack([bx, by - thick / 2], 1)[[0, 2, 4, 6, 8]]
        if side < 0:
            lm[17:22] = centre[::-1]
        else:
            lm[22:27] = centre
        lz[17:27] = 1

    # hair on the head (over the forehead)
    if style != "bald":
        hl = idn.hairline + (8 if style == "receding" else 0)
        side_bottom = ey - 6 if style in ("short", "receding") else ey + 4
        outer = _ellipse(X0, jt, fw * vol, (jt - idn.skull_top) * vol + 3, 17, t0=math.pi, t1=2 * math.pi)
        outer = np.concatenate([[[X0 - fw * vol, side_bottom]], outer, [[X0 + fw * vol, side_bottom]]])
        if style == "bangs":
            xs = np.linspace(X0 + fw * 0.8, X0 - fw * 0.8, 11)
            fringe = y_fh - 1 + 1.5 * np.tile([0, 1.0], 6)[:11] + 3 * ((xs - X0) / fw) ** 2
            line = np.stack([xs, fringe], 1)
        else:
            line = np.array([[X0 + fw * 0.75, hl + 6], [X0 + fw * 0.4, hl + 1], [X0 + idn.hair_part * 0.3, hl],
                             [X0 - fw * 0.4, hl + 1], [X0 - fw * 0.75, hl + 6]])
        hairline = np.concatenate([[[X0 + fw - 1.0, side_bottom], [X0 + fw * 0.97, ey - 10]], line,
                                   [[X0 - fw * 0.97, ey - 10], [X0 - fw + 1.0, side_bottom]]])
        g.surface("hair", np.concatenate([outer, hairline]), 3.0)

    # glasses: rims, bridge and temples; sunglasses have opaque lenses
    if lk.glasses is not None:
        extra, lh, rim = lk.glasses_size
        lw = idn.eye_w + extra
        for side, name in ((-1, "lens_r"), (1, "lens_l")):
            ex = X0 + side * idn.eye_dx
            if lk.glasses == "round":
                lens = _ellipse(ex, ey + 0.5, lw, lh, 18)
            else:
                lens = _ellipse(ex, ey + 0.5, lw, lh * (1.25 if lk.glasses == "sun" else 1.0), 18, power=4.0)
            g.surface(name, lens, 9.0)
            g.add(name + "_temple", [[ex + side * lw, ey - lh * 0.3], [X0 + side * (fw + 2), ey - 1]],
                  np.array([idn.depth * 0.6 + 6, -4.0]))
        g.surface("bridge", _curve([[X0 - idn.eye_dx + lw, ey - lh * 0.3], [X0, ey - lh * 0.9],
                                    [X0 + idn.eye_dx - lw, ey - lh * 0.3]], 5), 10.0)

    # headwear
    if lk.headwear is not None:
        yb = (idn.hairline if style != "receding" else idn.hairline + 8) + lk.headwear_y
        top = (jt - idn.skull_top) * vol
        kind = lk.headwear
        if kind == "band":
            arc = _curve([[X0 - fw * 1.02, yb + 2], [X0, yb - 4], [X0 + fw * 1.02, yb + 2]], 9)
            g.surface("headwear", np.concatenate([arc, (arc + [0, 5.5])[::-1]]), 4.0)
        else:
            ax = fw * (0.95 if kind == "hat" else 1.1)
            h_top = top + (16 if kind == "hat" else 6)
            dome = _ellipse(X0, jt, ax, h_top, 17, t0=math.pi, t1=2 * math.pi)
            dome = dome[dome[:, 1] <= yb]
            crown = np.concatenate([[[X0 - ax, yb + 2]], dome, [[X0 + ax, yb + 2]]])
            g.surface("headwear", crown, 6.0)
            if kind == "cap":
                g.surface("brim", _curve([[X0 + fw * 0.85, yb], [X0 + fw * 0.5, yb + 9], [X0 - fw * 0.5, yb + 9],
                                          [X0 - fw * 0.85, yb]], 9), 14.0)
            elif kind == "hat":
                g.surface("brim", _ellipse(X0, yb + 1, fw * 1.75, 4.5, 18), 6.0)
            else:  # beanie fold (image only)
                g.surface("fold", [[X0 - ax, yb + 2], [X0 + ax, yb + 2], [X0 + ax, yb - 4], [X0 - ax, yb - 4]], 6.0)

    lz = g.z(lm) + lz
    lz[:17] = 0.0  # the jaw line is the outline
    g.add("ldmk", lm, lz)
    return g.finish()


# ----------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------
class Render(NamedTuple):
    image: np.ndarray  # RGB uint8 HxWx3
    mask: np.ndarray  # uint8 HxW, 25-class ids
    landmarks: np.ndarray  # float32 [70, 2] output pixels: 68 iBUG points, right pupil, left pupil


def _project(p: np.ndarray, lk: Look) -> np.ndarray:
    """Orthographic head rotation (yaw about the vertical axis, pitch, then roll) -> canonical 2-D."""
    y, x, r = (math.radians(a) for a in (lk.yaw, lk.pitch, lk.roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    c = np.array([X0, 62.0, 0.0])
    return ((p - c) @ (rz @ rx @ ry).T)[:, :2] + c[:2]


def _about_centre(size: int, scale: float, deg: float, dx: float, dy: float) -> np.ndarray:
    """3x3 similarity: scale and rotate about the image centre, then shift (pixels)."""
    a = math.radians(deg)
    c = size / 2
    m = np.array([[scale * math.cos(a), -scale * math.sin(a), 0], [scale * math.sin(a), scale * math.cos(a), 0],
                  [0, 0, 1]])
    m[:2, 2] = [c + dx, c + dy] - m[:2, :2] @ [c, c]
    return m


def frame_matrix(points5: np.ndarray, look: Look, size: int, frame: str = "aligned") -> np.ndarray:
    """2x3 map from posed canonical points to output pixels.

    'aligned': the ArcFace alignment of the face's own 5 points plus the look's small residual jitter
    (a detector is never exact); 'loose': a larger, rotated, shifted crop (FaceSynthetics, IJB loose_crop).
    """
    if frame == "aligned":
        dx, dy, ls, rot = look.jitter
        j = _about_centre(size, math.exp(ls), rot, dx * size / 112, dy * size / 112)
    elif frame == "loose":
        k, rot, dx, dy = look.loose
        j = _about_centre(size, k, rot, dx * size, dy * size)
    else:
        raise ValueError(f"frame must be 'aligned' or 'loose', got {frame!r}")
    return (j @ np.vstack([similarity_transform(points5, ARCFACE_TEMPLATE * (size / 112.0)), [0, 0, 1]]))[:2]


def _shade(c: Sequence[int], f: float, towards: Sequence[int] | None = None) -> tuple[int, ...]:
    """Colour scaled by f, or blended towards another colour by f."""
    c = np.asarray(c, np.float32)
    out = c * f if towards is None else c * (1 - f) + np.asarray(towards, np.float32) * f
    return tuple(int(v) for v in np.clip(out, 0, 255))


class _Canvas:
    """Image and mask drawn together; the mask never anti-aliases.

    Points are int32 in 1/16 pixel (cv2 ``shift``), rounded once per image.
    """

    def __init__(self, size: int, scale: float):
        self.size = size
        self.scale = scale  # output pixels per canonical unit
        self.img = np.empty((size, size, 3), np.uint8)
        self.mask = np.zeros((size, size), np.uint8)

    def fill(self, pts: np.ndarray, colour: Sequence[int], cid: int | None = None) -> None:
        cv2.fillPoly(self.img, [pts], colour, cv2.LINE_AA, _SHIFT)
        if cid is not None:
            cv2.fillPoly(self.mask, [pts], cid, cv2.LINE_8, _SHIFT)

    def line(self, pts: np.ndarray, colour: Sequence[int], width: float, cid: int | None = None,
             closed: bool = False) -> None:
        t = max(1, round(width * self.scale))
        cv2.polylines(self.img, [pts], closed, colour, t, cv2.LINE_AA, _SHIFT)
        if cid is not None:
            cv2.polylines(self.mask, [pts], closed, cid, t, cv2.LINE_8, _SHIFT)

    def dot(self, centre: np.ndarray, radius: float, colour: Sequence[int]) -> None:
        cv2.circle(self.img, (int(centre[0]), int(centre[1])), max(_ONE // 2, int(radius * self.scale * _ONE)),
                   colour, -1, cv2.LINE_AA, _SHIFT)

    def inside(self, cid: int, polys: Sequence[tuple[np.ndarray, Sequence[int]]]) -> None:
        """Image-only polygons clipped to the pixels currently labelled ``cid`` (iris in the eye, teeth in
        the mouth): drawn on a copy of their bounding box, of which only the ``cid`` pixels are kept."""
        allp = np.concatenate([p for p, _ in polys])
        x0, y0 = np.maximum((allp.min(0) >> _SHIFT) - 1, 0)
        x1, y1 = np.minimum((allp.max(0) >> _SHIFT) + 2, self.size)
        if x1 <= x0 or y1 <= y0:
            return
        sub = self.img[y0:y1, x0:x1]
        tmp = sub.copy()
        off = np.array([x0, y0], np.int32) * _ONE
        for p, colour in polys:
            cv2.fillPoly(tmp, [p - off], colour, cv2.LINE_AA, _SHIFT)
        cv2.copyTo(tmp, (self.mask[y0:y1, x0:x1] == cid).view(np.uint8), sub)


@lru_cache(maxsize=8)
def _noise_bank(n: int) -> np.ndarray:
    """Fixed standard-normal values; an image takes a slice at a random offset (cheaper than drawing anew)."""
    return np.random.default_rng(0x5EED).standard_normal(n, dtype=np.float32)


def _ramp(size: int, corners: np.ndarray) -> np.ndarray:
    """size x size x 3 field, bilinear between 4 corner values ([2, 2, 3], rows top/bottom)."""
    return cv2.resize(corners, (size, size), interpolation=cv2.INTER_LINEAR)


def _linear_corners(angle: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Corner values of a linear ramp from a to b along direction ``angle``."""
    g = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]], np.float32)  # (x, y) of TL, TR, BL, BR
    t = 0.5 + (g @ np.array([math.cos(angle), math.sin(angle)], np.float32))[:, None] / (2 * math.sqrt(2))
    return (np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t).reshape(2, 2, 3)


_SKIN_PARTS = (("sk_half_r", "right_cheek"), ("sk_half_l", "left_cheek"), ("sk_fh_r", "right_forehead"),
               ("sk_fh_l", "left_forehead"), ("sk_fh_m", "middle_forehead"), ("sk_ae_r", "around_right_eye"),
               ("sk_ae_l", "around_left_eye"), ("sk_ch_r", "right_chin"), ("sk_ch_l", "left_chin"))


def _draw(idn: Identity, lk: Look, P: dict[str, np.ndarray], size: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Paint parts back to front into image and mask, then light, blur and noise the image."""
    cv = _Canvas(size, scale)
    rng = _rng(lk.noise_seed)
    c1, c2, ang = lk.background
    cv.img[:] = _ramp(size, _linear_corners(ang, c1, c2)).astype(np.uint8)
    for _ in range(lk.clutter):  # background objects (image only)
        c = rng.uniform(0, size, 2)
        r = rng.uniform(0.05, 0.3) * size
        shape = _ellipse(c[0], c[1], r, r * rng.uniform(0.3, 1), 12, rot=rng.uniform(0, 3), power=rng.choice([2, 6]))
        cv.fill(np.round(shape * _ONE).astype(np.int32), tuple(int(v) for v in rng.integers(0, 256, 3)))

    skin, hair = idn.skin, idn.hair_colour
    if "hair_back" in P:
        cv.fill(P["hair_back"], _shade(hair, 0.85), _C["hair"])
    cv.fill(P["neck"], _shade(skin, 0.82), _C["neck"])
    cv.fill(P["clothing"], lk.clothing_colour, _C["clothing"])
    for name, cid in (("ear_r", _C["right_ear"]), ("ear_l", _C["left_ear"])):
        cv.fill(P[name], _shade(skin, 0.92), cid)
        cv.fill(P[name + "_in"], _shade(skin, 0.75))
    for name in ("strand_r", "strand_l"):
        if name in P:
            cv.fill(P[name], hair, _C["hair"])

    # face skin: the nine sub-regions, inside the face outline only
    face = np.zeros((size, size), np.uint8)
    cv2.fillPoly(face, [P["face"]], 1, cv2.LINE_8, _SHIFT)
    part = np.zeros((size, size), np.uint8)
    for name, cname in _SKIN_PARTS:
        cv2.fillPoly(part, [P[name]], _C[cname], cv2.LINE_8, _SHIFT)
    cv2.copyTo(part, face, cv.mask)
    cv.fill(P["face"], _shade(skin, 0.9))
    centre = P["face"].mean(0)
    cv.fill((centre + (P["face"] - centre) * 0.9).astype(np.int32), skin)

    # marks on the skin (image only; later parts hide them where they overlap)
    if "blush_r" in P:
        for name in ("blush_r", "blush_l"):
            cv.fill(P[name], _shade(skin, idn.blush, (220, 90, 90)))
    for k in range(idn.wrinkles):
        cv.line(P[f"wrinkle{k}"], _shade(skin, 0.8), 0.5)
    if "dimple" in P:
        cv.line(P["dimple"], _shade(skin, 0.75), 0.5)
    for p in P.get("freckles", ()):
        cv.dot(p, 0.45, idn.freckle_colour)
    for p, r in zip(P.get("moles", ()), idn.moles[:, 2]):
        cv.dot(p, r, (60, 38, 28))

    # nose, mouth, eyes, brows
    cv.fill(P["nose"], _shade(skin, idn.nose_shade), _C["nose"])
    cv.line(P["nose_hl"], _shade(skin, 1.08), 1.0)
    for name in ("nostril_r", "nostril_l"):
        cv.fill(P[name], _shade(skin, 0.45))
    if "mouth" in P:
        cv.fill(P["mouth"], (95, 25, 35), _C["mouth"])
        cv.inside(_C["mouth"], [(P["teeth"], (232, 228, 215))])
    cv.fill(P["lip_up"], idn.lip_colour, _C["upper_lip"])
    cv.fill(P["lip_lo"], _shade(idn.lip_colour, 1.08), _C["lower_lip"])
    open_eye = idn.eye_h * lk.eye_open >= 0.35
    for name, cname in (("eye_r", "right_eye"), ("eye_l", "left_eye")):
        if open_eye:
            cv.fill(P[name], (236, 232, 226), _C[cname])
            cv.inside(_C[cname], [(P[name + "_iris"], idn.iris), (P[name + "_pupil"], (12, 10, 10))])
        cv.line(P[name + "_lash"], (30, 22, 20), 0.7)
    for name, cname in (("brow_r", "right_brow"), ("brow_l", "left_brow")):
        cv.fill(P[name], idn.brow_colour, _C[cname])

    # hair, glasses, headwear
    if "hair" in P:
        cv.fill(P["hair"], hair, _C["hair"])
    if lk.glasses is not None:
        rim = lk.glasses_size[2]
        col = lk.glasses_colour
        for name in ("lens_r", "lens_l"):
            cv.line(P[name + "_temple"], col, rim, _C["glasses"])
            if lk.glasses == "sun":
                cv.fill(P[name], _shade(col, 0.5, (20, 20, 25)), _C["glasses"])
            cv.line(P[name], col, rim, _C["glasses"], closed=True)
        cv.line(P["bridge"], col, rim, _C["glasses"])
    if lk.headwear is not None:
        col = lk.headwear_colour
        cv.fill(P["headwear"], col, _C["headwear"])
        if "brim" in P:
            cv.fill(P["brim"], _shade(col, 0.8), _C["headwear"])
        if "fold" in P:
            cv.fill(P["fold"], _shade(col, 0.85))

    # photometry: directional light with colour tint, blur, sensor noise (cv2: fast at any size)
    direction, strength, bright = lk.light
    tint = np.asarray(lk.tint, np.float32) * bright
    light = _ramp(size, _linear_corners(direction, tint * (1 - strength), tint * (1 + strength)))
    img = cv2.multiply(cv.img, light, dtype=cv2.CV_32F)
    if lk.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), lk.blur * scale)
    if lk.noise > 0:
        n = img.size
        bank = _noise_bank(max(4 * n, 1 << 20))
        o = int(rng.integers(len(bank) - n))
        img = cv2.scaleAdd(bank[o:o + n].reshape(img.shape), lk.noise, img)
    return cv2.convertScaleAbs(cv2.max(img, 0.0)), cv.mask


def render(identity: Identity, look: Look, size: int = 112, frame: str = "aligned") -> Render:
    """Image, exact 25-class mask and 70 landmarks of ``identity`` under ``look`` (see ``frame_matrix``)."""
    names, ends, pts = _build(identity, look)
    flat = _project(pts, look)
    m = frame_matrix(five_points_from_68(flat[ends[-2]:]), look, size, frame)
    flat = flat @ m[:, :2].T + m[:, 2]
    parts = dict(zip(names, np.split(np.round(flat * _ONE).astype(np.int32), ends[:-1])))
    img, mask = _draw(identity, look, parts, size, math.sqrt(abs(np.linalg.det(m[:, :2]))))
    return Render(img, mask, flat[ends[-2]:].astype(np.float32))


def render_aligned(identity: Identity, rng: np.random.Generator, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """One ArcFace-aligned face (RGB uint8 HxWx3) and its exact 25-class mask (uint8 HxW)."""
    r = render(identity, sample_look(identity, rng), size, "aligned")
    return r.image, r.mask


def render_loose(identity: Identity, rng: np.random.Generator, size: int = 512) -> Render:
    """One loosely cropped face (FaceSynthetics framing) with mask and 70 landmarks."""
    return render(identity, sample_look(identity, rng), size, "loose")


# ----------------------------------------------------------------------------------------------
# writers (each image is seeded by its own key, so any number of worker processes gives the same bytes)
# ----------------------------------------------------------------------------------------------
_identity = lru_cache(maxsize=4096)(_sample_identity)  # writers render many images per identity


def image_spec(seed: int, stream: int, ident: int, image: int) -> tuple[Identity, Look]:
    """Identity and look of image ``image`` of identity ``ident`` as the writers render it (e.g. to
    re-render a record at another size or frame, or without the alignment jitter)."""
    idn = _identity((int(seed), int(stream), int(ident)))
    return idn, sample_look(idn, _rng(seed, stream, ident, image + 1))


def _image(seed: int, stream: int, ident: int, image: int, size: int, frame: str) -> Render:
    return render(*image_spec(seed, stream, ident, image), size, frame)


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cv2 failed to encode a JPEG")
    return buf.tobytes()


def _default_workers(n_items: int) -> int:
    return max(1, min(os.cpu_count() or 1, n_items // 500))


def _pmap(fn: Callable, jobs: Sequence, workers: int | None, desc: str, progress: bool) -> Iterator:
    """Ordered map over jobs, in worker processes when there are enough jobs to pay for them."""
    workers = _default_workers(len(jobs)) if workers is None else max(1, int(workers))
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress, leave=False)
    try:
        if workers == 1:
            for job in jobs:
                yield fn(job)
                bar.update()
            return
        # Not plain fork: a caller that already ran cv2 or torch thread pools (a test session, a demo)
        # can leave their locks held in a forked child, which then hangs. The forkserver is a clean
        # single-threaded process that has imported this module once.
        if "forkserver" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload([__name__])
        else:
            ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
            for out in pool.imap(fn, jobs, chunksize=max(1, min(64, len(jobs) // (8 * workers)))):
                yield out
                bar.update()
    finally:
        bar.close()


def _rec_job(job: tuple[int, int, int, int, int, int]) -> tuple[bytes, np.ndarray]:
    from fse_plugin.recordio import IRHeader, pack_img
    seed, ident, image, key, size, quality = job
    r = _image(seed, TRAIN, ident, image, size, "aligned")
    rec = pack_img(IRHeader(0, float(ident), key, 0), np.ascontiguousarray(r.image[..., ::-1]), quality=quality)
    return rec, r.mask


def write_rec(out_dir: str | os.PathLike, n_identities: int, images_per_identity: int, seed: int, *,
              size: int = 112, quality: int = 95, workers: int | None = None, progress: bool = False) -> Path:
    """insightface-layout ``train.rec``/``train.idx``/``property`` of aligned faces plus ``gt_masks.npz``.

    Layout as insightface's rec_builder: images at keys 1..N (IRHeader(0, label, key, 0)), then one
    image-less record per identity with label [first_key, end_key), then record 0 with label
    [first identity key, end] and id2=1. Identity ``i`` (label ``i``) is identity ``i`` of the TRAIN
    stream. ``gt_masks.npz`` holds ``keys`` (int64, in ``recordio.image_index`` order) and ``masks``
    (uint8 [N, size, size], the exact aligned masks). Returns ``out_dir``.
    """
    from fse_plugin.recordio import IRHeader, MXIndexedRecordIO, image_index, pack
    if n_identities < 1 or images_per_identity < 1:
        raise ValueError(f"need n_identities >= 1 and images_per_identity >= 1, got {n_identities}, "
                         f"{images_per_identity}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = n_identities * images_per_identity
    jobs = [(int(seed), i, j, 1 + i * images_per_identity + j, size, quality)
            for i in range(n_identities) for j in range(images_per_identity)]
    masks = np.empty((n, size, size), np.uint8)
    rec = MXIndexedRecordIO(str(out / "train.idx"), str(out / "train.rec"), "w")
    try:
        for k, (buf, mask) in enumerate(_pmap(_rec_job, jobs, workers, "train.rec", progress)):
            rec.write_idx(jobs[k][3], buf)
            masks[k] = mask
        for i in range(n_identities):
            first = 1 + i * images_per_identity
            rec.write_idx(n + 1 + i, pack(IRHeader(0, [first, first + images_per_identity], n + 1 + i, 0), b""))
        rec.write_idx(0, pack(IRHeader(0, [n + 1, n + 1 + n_identities], 0, 1), b""))
    finally:
        rec.close()
    (out / "property").write_text(f"{n_identities},{size},{size}\n")
    index = image_index(out)
    np.savez_compressed(out / "gt_masks.npz", keys=index.keys.astype(np.int64), masks=masks[index.keys - 1])
    return out


def _pair_job(job: tuple[int, int, int, int]) -> tuple[bytes, np.ndarray]:
    seed, ident, image, quality = job
    r = _image(seed, HELDOUT, ident, image, 112, "aligned")
    return _jpeg(r.image, quality), r.mask


def pair_plan(n_pairs: int, seed: int, n_identities: int | None = None) -> list[tuple[int, int, bool]]:
    """(identity a, identity b, same) of each pair of ``write_pairs_bin``: pairs alternate same /
    different, so every contiguous fold of the 10-fold protocol holds both kinds."""
    n_ids = max(2, n_pairs // 2) if n_identities is None else int(n_identities)
    if n_ids < 2:
        raise ValueError(f"need at least 2 identities for different pairs, got {n_ids}")
    plan = []
    for p in range(n_pairs):
        rng = _rng(seed, _PAIR_STREAM, p)
        a = int(rng.integers(n_ids))
        same = p % 2 == 0
        b = a if same else int((a + 1 + rng.integers(n_ids - 1)) % n_ids)
        plan.append((a, b, same))
    return plan


def write_pairs_bin(path: str | os.PathLike, n_pairs: int, seed: int, *, n_identities: int | None = None,
                    quality: int = 95, workers: int | None = None, progress: bool = False) -> Path:
    """Verification pack (.bin as insightface: pickle of (2P JPEG bytes, P bools)) of held-out identities.

    Identities come from the HELDOUT stream, disjoint from every ``write_rec`` identity whatever the seeds
    (see the module docstring); pair ``p`` shows images ``2p`` and ``2p+1`` (``pair_plan`` says whose).
    Also writes ``<path minus .bin>.masks.npy``: uint8 [2P, 112, 112] exact masks in image order.
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plan = pair_plan(n_pairs, seed, n_identities)
    jobs = []
    for p, (a, b, _) in enumerate(plan):
        jobs += [(int(seed), a, 2 * p, quality), (int(seed), b, 2 * p + 1, quality)]
    bins, masks = [], np.empty((2 * n_pairs, 112, 112), np.uint8)
    for k, (buf, mask) in enumerate(_pmap(_pair_job, jobs, workers, path.name, progress)):
        bins.append(buf)
        masks[k] = mask
    issame = [same for _, _, same in plan]
    with open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=4)
    np.save(path.with_suffix("").with_name(path.stem + ".masks.npy"), masks)
    return path


def _fs_job(job: tuple[str, int, int, int, float]) -> int:
    out, seed, frame_id, size, missing_25 = job
    r = _image(seed, PARSER, frame_id, 0, size, "loose")
    with_25 = int(_rng(seed, PARSER, frame_id, 0, 25).random() >= missing_25)
    stem = os.path.join(out, f"{frame_id:06d}")
    cv2.imwrite(stem + ".png", np.ascontiguousarray(r.image[..., ::-1]))
    cv2.imwrite(stem + "_seg.png", L25_TO_FS19[r.mask])
    np.savetxt(stem + "_ldmks.txt", r.landmarks, fmt="%.4f")
    if with_25:
        cv2.imwrite(os.path.join(out, "labels_25", f"{frame_id:06d}_seg.png"), r.mask)
        cv2.imwrite(os.path.join(out, "labels_9", f"{frame_id:06d}_seg.png"),
                    np.where(r.mask <= max(SKIN_IDS), r.mask, 0).astype(np.uint8))
    return with_25


def write_facesynthetics(out_dir: str | os.PathLike, n_images: int, seed: int, *, size: int = 512,
                         missing_25: float = 0.12, workers: int | None = None, progress: bool = False) -> Path:
    """FaceSynthetics-layout folder with the FSErasing 25-class labels.

    ``{id:06d}.png`` (size x size RGB), ``{id:06d}_seg.png`` (19 classes), ``{id:06d}_ldmks.txt`` (70 rows
    ``x y``: 68 iBUG points, right pupil, left pupil), ``labels_25/{id:06d}_seg.png``, ``labels_9/`` (the
    nine skin sub-regions) and ``anno_list.csv`` (frame_id,with_25). About ``missing_25`` of the frames get
    with_25=0 and no 25-class label, as frames where the released labels failed. Frame ``i`` is identity
    ``i`` of the PARSER stream (its image 0, see ``image_spec``). Returns ``out_dir``.
    """
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    out = Path(out_dir)
    (out / "labels_25").mkdir(parents=True, exist_ok=True)
    (out / "labels_9").mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), int(seed), i, size, missing_25) for i in range(n_images)]
    flags = list(_pmap(_fs_job, jobs, workers, "facesynthetics", progress))
    with open(out / "anno_list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame_id", "with_25"])
        w.writerows(enumerate(flags))
    return out


def _ijb_job(job: tuple[str, int, int, int, int, int]) -> tuple[np.ndarray, float, np.ndarray]:
    out, seed, ident, media, frame, name = job
    idn = _identity((seed, HELDOUT, ident))
    base = sample_look(idn, _rng(seed, HELDOUT, ident, 10_000_000 + media))  # one video / photo
    rng = _rng(seed, HELDOUT, ident, 10_000_000 + media, frame)
    look = replace(base, yaw=float(np.clip(base.yaw + rng.normal(0, 4), -45, 45)),
                   pitch=base.pitch + float(rng.normal(0, 2)), noise_seed=int(rng.integers(2 ** 31)),
                   loose=(base.loose[0] * 0.7, base.loose[1] + float(rng.normal(0, 3)),
                          base.loose[2] + float(rng.normal(0, 0.02)), base.loose[3] + float(rng.normal(0, 0.02))))
    size = int(rng.integers(140, 260))
    r = render(idn, look, size, "loose")
    cv2.imwrite(os.path.join(out, "loose_crop", f"{name}.jpg"), np.ascontiguousarray(r.image[..., ::-1]),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    p5 = five_points_from_68(r.landmarks)
    return p5, float(rng.uniform(0.5, 1.0)), align_mask(r.mask, p5)


def write_ijb(out_dir: str | os.PathLike, name: str = "IJBC", *, n_identities: int = 20,
              templates_per_identity: int = 3, media_per_template: int = 2, images_per_media: int = 2,
              n_impostor: int | None = None, seed: int = 0, workers: int | None = None,
              progress: bool = False) -> Path:
    """IJB-B/C-style 1:1 set of held-out synthetic faces, readable by upstream eval_ijbc.py.

    ``meta/{t}_face_tid_mid.txt`` (``name tid mid``), ``meta/{t}_name_5pts_score.txt`` (``name x1 y1 ..
    x5 y5 faceness``, same row order), ``meta/{t}_template_pair_label.txt`` (``t1 t2 label``) with
    ``t`` = name.lower(); ``loose_crop/<n>.jpg`` are larger, non-aligned faces of varying size whose 5 points
    are the true landmark positions. Media are videos (frames share one look, jittered); all genuine
    template pairs are listed, plus ``n_impostor`` different-identity pairs (all of them if None).
    ``gt_masks.npy`` (uint8 [N, 112, 112], rows in 5pts-file order) holds each image's exact mask aligned
    with its 5 points (``align.align_mask``), i.e. the mask of the face the protocol embeds.
    """
    t = name.lower()
    if t not in ("ijbc", "ijbb"):
        raise ValueError(f"name must be 'IJBC' or 'IJBB', got {name!r}")
    if min(n_identities, templates_per_identity, media_per_template, images_per_media) < 1 or n_identities < 2:
        raise ValueError("need n_identities >= 2 and at least one template, media and image each")
    out = Path(out_dir)
    (out / "meta").mkdir(parents=True, exist_ok=True)
    (out / "loose_crop").mkdir(parents=True, exist_ok=True)
    jobs, rows = [], []
    tid = mid = 0
    owner = {}
    for i in range(n_identities):
        for _ in range(templates_per_identity):
            tid += 1
            owner[tid] = i
            for _ in range(media_per_template):
                mid += 1
                for f in range(images_per_media):
                    jobs.append((str(out / ""), int(seed), i, mid, f, len(jobs) + 1))
                    rows.append((f"{len(jobs)}.jpg", tid, mid))
    results = list(_pmap(_ijb_job, jobs, workers, name, progress))
    with open(out / "meta" / f"{t}_face_tid_mid.txt", "w") as f:
        f.writelines(f"{n} {a} {b}\n" for n, a, b in rows)
    with open(out / "meta" / f"{t}_name_5pts_score.txt", "w") as f:
        for (n, _, _), (p5, score, _) in zip(rows, results):
            f.write(n + " " + " ".join(f"{v:.3f}" for v in p5.reshape(-1)) + f" {score:.4f}\n")
    np.save(out / "gt_masks.npy", np.stack([m for _, _, m in results]))
    tids = sorted(owner)
    genuine = [(a, b) for a in tids for b in tids if a < b and owner[a] == owner[b]]
    impostor = [(a, b) for a in tids for b in tids if a < b and owner[a] != owner[b]]
    rng = _rng(seed, _IJB_STREAM, 0)
    if n_impostor is not None and n_impostor < len(impostor):
        impostor = [impostor[k] for k in sorted(rng.choice(len(impostor), n_impostor, replace=False))]
    pairs = [(a, b, 1) for a, b in genuine] + [(a, b, 0) for a, b in impostor]
    order = rng.permutation(len(pairs))
    with open(out / "meta" / f"{t}_template_pair_label.txt", "w") as f:
        f.writelines("%d %d %d\n" % pairs[k] for k in order)
    return out
