"""Rendered occluders on aligned faces: sunglasses, a surgical mask, a cap or hat, a hand.

Real occlusion is not a parsing region filled with noise: it is an object in front of the face,
with its own shape, colour and shading, that hides parts of several regions at once. These are
drawn on aligned 112x112 faces (any aligned face, real or synthetic) in the geometry of the ArcFace
five-point template (``fse_plugin.align.ARCFACE_TEMPLATE``), or of the face's own five points when
given. Each draw is deterministic by its ``numpy.random.Generator`` and varies shape, size, position
and colour within plausible ranges.

Shapes are rasterised 4x supersampled and composited with their coverage as alpha, so edges are
antialiased. ``occluder_layer`` returns the colour layer and its coverage (what the object hides);
``occlude`` composites it onto an image; ``Occluder`` is the same as a transform object.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import cv2
import numpy as np

from fse_plugin.align import ARCFACE_TEMPLATE
from fse_plugin.common import FSEError
from fse_plugin.synth.geometry import ellipse

__all__ = ["OCCLUDERS", "Occluder", "check_kind", "occlude", "occluder_layer"]

_SS = 4  # supersampling factor of the coverage masks
_TEMPLATE_SIZE = 112.0


class _Frame:
    """Face coordinates: origin between the eyes, x towards the image-right eye, y down, 1 unit = 1
    px of the 112 template. Maps template-unit points to image pixels through the face's
    similarity."""

    def __init__(self, points5: np.ndarray) -> None:
        p = np.asarray(points5, dtype=np.float64)
        self.left_eye, self.right_eye = p[0], p[1]
        self.origin = (p[0] + p[1]) / 2
        t = ARCFACE_TEMPLATE.astype(np.float64)
        self.scale = np.linalg.norm(p[1] - p[0]) / np.linalg.norm(t[1] - t[0])
        u = (p[1] - p[0]) / np.linalg.norm(p[1] - p[0])
        self.u, self.v = u, np.array([-u[1], u[0]])
        local = lambda q: ((q - self.origin) @ np.stack([u, self.v], 1)) / self.scale  # noqa: E731
        self.nose, self.mouth = local(p[2]), local((p[3] + p[4]) / 2)
        self.eye_dx = local(p[1])[0]
        self.mouth_dx = local(p[4])[0] - local(p[3])[0]

    def px(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        return self.origin + self.scale * (pts[:, :1] * self.u + pts[:, 1:] * self.v)


class _Layer:
    """An RGBA layer built shape by shape (later shapes on top)."""

    def __init__(self, h: int, w: int) -> None:
        self.rgb = np.zeros((h, w, 3), np.float32)
        self.alpha = np.zeros((h, w), np.float32)

    def _draw(self, pts: np.ndarray, margin: float, draw: Callable[[np.ndarray, np.ndarray], None],
              colour: np.ndarray | tuple, opacity: float) -> None:
        """Rasterise ``draw(canvas, points)`` 4x supersampled inside the shape's bounding box and
        composite the coverage there."""
        h, w = self.alpha.shape
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        x0, y0 = np.floor(np.maximum(pts.min(0) - margin, 0)).astype(int)
        x1, y1 = np.ceil(np.minimum(pts.max(0) + margin, [w, h])).astype(int)
        if x1 <= x0 or y1 <= y0:
            return  # wholly outside the image
        big = np.zeros(((y1 - y0) * _SS, (x1 - x0) * _SS), np.uint8)
        draw(big, np.round((pts - [x0, y0]) * _SS).astype(np.int32))
        cov = cv2.resize(big, (x1 - x0, y1 - y0),
                         interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        a = cov * float(opacity)
        window = (slice(y0, y1), slice(x0, x1))
        alpha, rgb = self.alpha[window], self.rgb[window]
        out_a = a + alpha * (1 - a)
        mix = a[..., None] * np.asarray(colour, np.float32) + (alpha * (1 - a))[..., None] * rgb
        self.rgb[window] = np.where(out_a[..., None] > 0, mix / np.maximum(out_a, 1e-6)[..., None],
                                    rgb)
        self.alpha[window] = out_a

    def poly(self, pts: np.ndarray, colour, opacity: float = 1.0) -> None:
        self._draw(pts, 1.0, lambda big, p: cv2.fillPoly(big, [p], 255, cv2.LINE_AA), colour,
                   opacity)

    def line(self, pts: np.ndarray, colour, width: float, opacity: float = 1.0,
             closed: bool = False) -> None:
        thick = max(1, int(round(width * _SS)))
        self._draw(pts, width / 2 + 1.0,
                   lambda big, p: cv2.polylines(big, [p], closed, 255, thick, cv2.LINE_AA),
                   colour, opacity)

    def shade(self, direction: np.ndarray, strength: float) -> None:
        """Darken the layer linearly along ``direction`` (a light from the opposite side)."""
        h, w = self.alpha.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = (xx * direction[0] + yy * direction[1]) / max(h, w)
        self.rgb *= (1 - strength * (ramp - ramp.min()))[..., None]


def _bezier(ctrl: np.ndarray, n: int = 16) -> np.ndarray:
    ctrl = np.asarray(ctrl, np.float64)
    t = np.linspace(0, 1, n)[:, None]
    pts = ctrl
    while len(pts) > 1:  # de Casteljau
        pts = np.stack([(1 - t) * pts[i] + t * pts[i + 1] for i in range(len(pts) - 1)])
    return pts[0]


def _jitter_colour(rng: np.random.Generator, base: tuple, spread: float) -> np.ndarray:
    return np.clip(np.asarray(base, np.float32) + rng.normal(0, spread, 3), 0, 255)


# ----------------------------------------------------------------------------------------------
# the occluders (template units: origin between the eyes, eyes at x = +-eye_dx, y down)
# ----------------------------------------------------------------------------------------------

def _sunglasses(layer: _Layer, f: _Frame, rng: np.random.Generator, reach: float) -> None:
    """Two dark lenses over the eyes, a bridge and temples to the image sides: the eye band."""
    hw, hh = rng.uniform(10.5, 14.0), rng.uniform(7.5, 10.5)
    dy, power = rng.uniform(-0.5, 2.0), rng.uniform(2.2, 4.5)
    lens = _jitter_colour(rng, rng.choice([(20, 20, 24), (45, 30, 20), (25, 40, 30), (50, 50, 60)]),
                          8)
    frame = np.clip(lens * rng.uniform(0.4, 1.2), 0, 255)
    for side in (-1, 1):
        cx = side * f.eye_dx
        rim = f.px(ellipse(cx, dy, hw, hh, 48, power=power))
        layer.poly(rim, lens, rng.uniform(0.93, 1.0))
        layer.line(rim, frame, rng.uniform(1.0, 2.0), closed=True)
        glint = ellipse(cx - side * hw * 0.35, dy - hh * 0.45, hw * 0.3, hh * 0.18, 16)
        layer.poly(f.px(glint), (235, 235, 235), rng.uniform(0.15, 0.35))
        outer = cx + side * hw
        layer.line(f.px([[outer, dy - hh * 0.4], [side * reach, dy - hh * 0.6 - 2]]), frame, 2.2)
    inner = f.eye_dx - hw
    layer.line(f.px(_bezier([[-inner - 0.5, dy - hh * 0.3], [0, dy - hh * 0.9],
                             [inner + 0.5, dy - hh * 0.3]])),
               frame, rng.uniform(1.8, 2.8))


def _surgical_mask(layer: _Layer, f: _Frame, rng: np.random.Generator, reach: float) -> None:
    """A surgical mask from the nose bridge over nose, mouth and chin; ear loops to the sides."""
    colour = _jitter_colour(rng, rng.choice([(160, 200, 230), (236, 236, 240), (35, 35, 40),
                                             (200, 215, 205), (235, 190, 200)]), 8)
    top = f.nose[1] * rng.uniform(0.45, 0.75)  # between the eyes (0) and the nose tip
    half = f.eye_dx * rng.uniform(1.65, 1.9)
    chin = f.mouth[1] + rng.uniform(18, 26)
    side_y = f.mouth[1] + rng.uniform(2, 8)
    top_edge = _bezier([[-half, top + 9], [-half * 0.4, top - 2], [half * 0.4, top - 2],
                        [half, top + 9]])
    bottom_edge = _bezier([[half * 0.95, side_y], [half * 0.6, chin], [-half * 0.6, chin],
                           [-half * 0.95, side_y]])
    body = np.vstack([top_edge, bottom_edge])
    layer.poly(f.px(body), colour)
    pleat = np.clip(colour * 0.8, 0, 255)
    for k in range(3):
        y = top + 12 + k * (side_y - top - 8) / 3
        layer.line(f.px([[-half * 0.92, y + 2], [0, y + 0.5], [half * 0.92, y + 2]]), pleat, 0.9,
                   0.8)
    loop = np.clip(colour * 0.9, 0, 255)
    for side in (-1, 1):
        layer.line(f.px([[side * half, top + 9], [side * reach, top + 2]]), loop, 1.2)
        layer.line(f.px([[side * half * 0.95, side_y], [side * reach, side_y - 10]]), loop, 1.2)
    layer.shade(np.array([rng.uniform(-1, 1), 1.0]), rng.uniform(0.0, 0.25))


def _hat(layer: _Layer, f: _Frame, rng: np.random.Generator, reach: float) -> None:
    """A cap or hat: the crown over the forehead and above, its brim just above the brows."""
    colour = _jitter_colour(rng, rng.uniform(20, 235, 3), 0)
    brim_y = -rng.uniform(10.5, 19.0)  # above the eyes (brows sit ~8-12 above them)
    half = f.eye_dx * rng.uniform(1.9, 2.4)
    crown = np.vstack([[[-half, brim_y + 1]],
                       _bezier([[-half, brim_y - 30], [-half * 0.5, -80], [half * 0.5, -80],
                               [half, brim_y - 30]], 20), [[half, brim_y + 1]]])
    layer.poly(f.px(crown), colour)
    brim = np.clip(colour * rng.uniform(0.55, 0.85), 0, 255)
    if rng.random() < 0.5:  # cap: a peak that curves down at the front
        depth = rng.uniform(5, 9)
        peak = np.vstack([_bezier([[-half * 0.85, brim_y], [-half * 0.4, brim_y + depth],
                                   [half * 0.4, brim_y + depth],
                                   [half * 0.85, brim_y]]),
                          [[half * 0.85, brim_y - 2], [-half * 0.85, brim_y - 2]]])
        layer.poly(f.px(peak), brim)
    else:  # hat: a band and a wide flat brim
        layer.poly(f.px([[-half, brim_y - 7], [half, brim_y - 7], [half, brim_y - 1],
                         [-half, brim_y - 1]]),
                   np.clip(colour * 0.6, 0, 255))
        layer.poly(f.px(ellipse(0, brim_y, half * 1.35, rng.uniform(2.5, 4.0), 48)), brim)
    layer.shade(np.array([0.0, -1.0]), rng.uniform(0.0, 0.3))


_SKIN = ((255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36),
         (92, 55, 30))


def _hand(layer: _Layer, f: _Frame, rng: np.random.Generator, reach: float) -> None:
    """A hand (palm, four fingers, thumb) over the mouth, a cheek, an eye or the chin."""
    skin = _jitter_colour(rng, _SKIN[int(rng.integers(len(_SKIN)))], 6)
    targets = {"mouth": f.mouth, "chin": f.mouth + [0, 14],
               "right_cheek": [-f.eye_dx * 0.9, f.nose[1]],
               "left_cheek": [f.eye_dx * 0.9, f.nose[1]],
               "right_eye": [-f.eye_dx, 0.0], "left_eye": [f.eye_dx, 0.0]}
    name = list(targets)[int(rng.integers(len(targets)))]
    centre = np.asarray(targets[name], np.float64) + rng.normal(0, 2.5, 2)
    from_side = -1.0 if centre[0] < 0 or (centre[0] == 0 and rng.random() < 0.5) else 1.0
    # fingers point across the face, the wrist off-face
    angle = math.radians(from_side * rng.uniform(55, 115))
    scale = rng.uniform(1.0, 1.3)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def place(pts: np.ndarray) -> np.ndarray:
        return f.px(centre + (np.asarray(pts, np.float64) * scale) @ rot.T)

    # hand frame: fingers along -y, palm centred at the origin, wrist towards +y
    layer.poly(place([[-10, 8], [10, 8], [8.5, 36], [-8.5, 36]]), skin)  # wrist
    layer.poly(place(ellipse(0, 4, 13, 15, 48, power=2.3)), skin)  # palm
    crease = np.clip(skin * 0.78, 0, 255)
    lengths = rng.uniform(19, 26) * np.array([0.9, 1.0, 0.97, 0.8])
    for k, (x, length) in enumerate(zip((-9.0, -3.0, 3.0, 9.0), lengths)):
        finger = ellipse(x, -9 - length / 2, 3.4, length / 2 + 2, 24)
        layer.poly(place(finger), skin)
        if k:
            layer.line(place([[x - 3.0, -8], [x - 3.0, -8 - length * 0.75]]), crease, 0.8, 0.9)
    thumb = ellipse(0, 0, 4.0, 11, 24) @ np.array([[0.8, 0.6], [-0.6, 0.8]]) + [15, 4]
    layer.poly(place(thumb), skin)
    layer.shade(rot @ np.array([0.0, 1.0]), rng.uniform(0.05, 0.3))


_DRAW = {"sunglasses": _sunglasses, "surgical_mask": _surgical_mask, "hat": _hat, "hand": _hand}
OCCLUDERS: tuple[str, ...] = tuple(_DRAW)
"""The occluder kinds: ``sunglasses`` (the eye band), ``surgical_mask`` (nose, mouth, chin), ``hat``
(forehead and above), ``hand`` (over the mouth, a cheek, an eye or the chin)."""


_RENAMED = {"mask": "surgical_mask"}
"""Earlier spellings of occluder kinds (a mask is a label map everywhere else in the plugin)."""


def check_kind(kind: str, name: str = "occluder") -> str:
    """The occluder kind ``kind`` names (an earlier spelling with a deprecation warning), else
    FSEError."""
    if kind in _RENAMED:
        warnings.warn(f"occluder kind {kind!r} is deprecated; use {_RENAMED[kind]!r}",
                      DeprecationWarning, stacklevel=3)
        return _RENAMED[kind]
    if kind not in _DRAW:
        raise FSEError(f"{name}: unknown occluder {kind!r}; choose from {', '.join(OCCLUDERS)}")
    return kind


def occluder_layer(kind: str, shape: tuple[int, int], rng: np.random.Generator,
                   points5: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The occluder as float32 RGB [H, W, 3] (0..255) and its coverage alpha [H, W] in [0, 1].

    ``points5`` are the face's five points (image-left eye, image-right eye, nose, mouth corners);
    default: the ArcFace template scaled to the image size, i.e. an aligned face.
    """
    h, w = int(shape[0]), int(shape[1])
    pts = (ARCFACE_TEMPLATE * (w / _TEMPLATE_SIZE) if points5 is None
           else np.asarray(points5, np.float64))
    frame = _Frame(pts)
    layer = _Layer(h, w)
    reach = (np.hypot(h, w) / frame.scale) / 2 + 8  # beyond the image sides, from between the eyes
    _DRAW[check_kind(kind)](layer, frame, rng, reach)
    return np.clip(layer.rgb, 0, 255), layer.alpha


def occlude(image: np.ndarray, kind: str, rng: np.random.Generator,
            points5: np.ndarray | None = None) -> np.ndarray:
    """``image`` (uint8 HxWx3 RGB, an aligned face) with an occluder of ``kind`` drawn on it (a new
    array)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FSEError(f"occlude: expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    rgb, alpha = occluder_layer(kind, image.shape[:2], rng, points5)
    out = image.astype(np.float32) * (1 - alpha[..., None]) + rgb * alpha[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


class Occluder:
    """``occlude`` as a transform: ``Occluder('surgical_mask')(image, rng)``."""

    def __init__(self, kind: str) -> None:
        self.kind = check_kind(kind)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return occlude(image, self.kind, rng)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind!r})"
