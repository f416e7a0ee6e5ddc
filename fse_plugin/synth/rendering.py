"""Rendering: pose a face's parts, map them to the output frame, paint image and exact mask
together.

The head is turned by an orthographic rotation and mapped to the output by a similarity: the ArcFace
alignment of its own landmarks (``frame='aligned'``) or a larger loose crop (``frame='loose'``,
FaceSynthetics / IJB style). Parts are painted back to front into image and mask together, so the
mask is exactly what is visible; the image alone gets anti-aliasing, skin marks, lighting, blur and
noise.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple, Sequence

import cv2
import numpy as np

from fse_plugin.align import ARCFACE_TEMPLATE, five_points_from_68, similarity_transform
from fse_plugin.common import FSEError
from fse_plugin.labels import CLASSES, MIRROR, SIDE
from fse_plugin.synth.geometry import build, ellipse
from fse_plugin.synth.identity import X0, Identity, Look, image_spec, keyed_rng, sample_look

__all__ = ["Render", "frame_matrix", "render", "render_aligned", "render_image"]

_C = {n: i for i, n in enumerate(CLASSES)}
_SHIFT = 4  # cv2 sub-pixel bits
_ONE = 1 << _SHIFT


class Render(NamedTuple):
    image: np.ndarray  # RGB uint8 HxWx3
    mask: np.ndarray  # uint8 HxW, 25-class ids
    # float32 [70, 2] output pixels: 68 iBUG points, image-left pupil, image-right pupil
    landmarks: np.ndarray


def _project(p: np.ndarray, lk: Look) -> np.ndarray:
    """Orthographic head rotation (yaw about the vertical axis, pitch, then roll) -> canonical
    2-D."""
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
    m = np.array([[scale * math.cos(a), -scale * math.sin(a), 0],
                  [scale * math.sin(a), scale * math.cos(a), 0], [0, 0, 1]])
    m[:2, 2] = [c + dx, c + dy] - m[:2, :2] @ [c, c]
    return m


def frame_matrix(points5: np.ndarray, look: Look, size: int, frame: str = "aligned") -> np.ndarray:
    """2x3 map from posed canonical points to output pixels.

    'aligned': the ArcFace alignment of the face's own 5 points plus the look's small residual
    jitter (a detector is never exact); 'loose': a larger, rotated, shifted crop (FaceSynthetics,
    IJB loose_crop).
    """
    if frame == "aligned":
        dx, dy, ls, rot = look.jitter
        j = _about_centre(size, math.exp(ls), rot, dx * size / 112, dy * size / 112)
    elif frame == "loose":
        k, rot, dx, dy = look.loose
        j = _about_centre(size, k, rot, dx * size, dy * size)
    else:
        raise FSEError(f"frame must be 'aligned' or 'loose', got {frame!r}")
    return (j @ np.vstack([similarity_transform(points5, ARCFACE_TEMPLATE * (size / 112.0)),
                           [0, 0, 1]]))[:2]


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
        cv2.circle(self.img, (int(centre[0]), int(centre[1])),
                   max(_ONE // 2, int(radius * self.scale * _ONE)), colour, -1, cv2.LINE_AA, _SHIFT)

    def inside(self, cid: int, polys: Sequence[tuple[np.ndarray, Sequence[int]]]) -> None:
        """Image-only polygons clipped to the pixels currently labelled ``cid`` (iris in the eye,
        teeth in the mouth): drawn on a copy of their bounding box, of which only the ``cid`` pixels
        are kept."""
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
    """Fixed standard-normal values; an image takes a slice at a random offset (cheaper than drawing
    anew)."""
    return np.random.default_rng(0x5EED).standard_normal(n, dtype=np.float32)


def _ramp(size: int, corners: np.ndarray) -> np.ndarray:
    """size x size x 3 field, bilinear between 4 corner values ([2, 2, 3], rows top/bottom)."""
    return cv2.resize(corners, (size, size), interpolation=cv2.INTER_LINEAR)


def _linear_corners(angle: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Corner values of a linear ramp from a to b along direction ``angle``."""
    g = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]], np.float32)  # (x, y) of TL, TR, BL, BR
    t = (0.5 + (g @ np.array([math.cos(angle), math.sin(angle)], np.float32))[:, None]
         / (2 * math.sqrt(2)))
    return (np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t).reshape(2, 2, 3)


def _label(name: str) -> int:
    """Class id of a part the geometry names by the subject's side (``right_ear`` for ``ear_r``):
    the same class where the label set names it by the subject's side, its mirror where by the
    image's side (``labels.SIDE``), since the subject's right lies on the image-left."""
    cid = _C[name]
    return int(MIRROR[cid]) if SIDE[cid] == "image" else cid


_SKIN_PARTS = tuple((part, _label(name)) for part, name in (
    ("sk_half_r", "right_cheek"), ("sk_half_l", "left_cheek"), ("sk_fh_r", "right_forehead"),
    ("sk_fh_l", "left_forehead"), ("sk_fh_m", "middle_forehead"), ("sk_ae_r", "around_right_eye"),
    ("sk_ae_l", "around_left_eye"), ("sk_ch_r", "right_chin"), ("sk_ch_l", "left_chin")))
_SIDED = {part: _label(f"{'right' if part.endswith('_r') else 'left'}_{part[:-2]}")
          for part in ("ear_r", "ear_l", "eye_r", "eye_l", "brow_r", "brow_l")}
"""Class id of each sided part: the ears, eyes and brows are named by the image's side."""


def _background(cv: _Canvas, lk: Look, rng: np.random.Generator) -> None:
    """A colour ramp and a few objects (image only)."""
    size = cv.size
    c1, c2, ang = lk.background
    cv.img[:] = _ramp(size, _linear_corners(ang, c1, c2)).astype(np.uint8)
    for _ in range(lk.clutter):
        c = rng.uniform(0, size, 2)
        r = rng.uniform(0.05, 0.3) * size
        shape = ellipse(c[0], c[1], r, r * rng.uniform(0.3, 1), 12, rot=rng.uniform(0, 3),
                        power=rng.choice([2, 6]))
        cv.fill(np.round(shape * _ONE).astype(np.int32),
                tuple(int(v) for v in rng.integers(0, 256, 3)))


def _behind_face(cv: _Canvas, idn: Identity, lk: Look, P: dict[str, np.ndarray]) -> None:
    """Hair behind the head, neck, clothing, ears, strands beside the face."""
    skin, hair = idn.skin, idn.hair_colour
    if "hair_back" in P:
        cv.fill(P["hair_back"], _shade(hair, 0.85), _C["hair"])
    cv.fill(P["neck"], _shade(skin, 0.82), _C["neck"])
    cv.fill(P["clothing"], lk.clothing_colour, _C["clothing"])
    for name in ("ear_r", "ear_l"):
        cv.fill(P[name], _shade(skin, 0.92), _SIDED[name])
        cv.fill(P[name + "_in"], _shade(skin, 0.75))
    for name in ("strand_r", "strand_l"):
        if name in P:
            cv.fill(P[name], hair, _C["hair"])


def _face_skin(cv: _Canvas, idn: Identity, lk: Look, P: dict[str, np.ndarray]) -> None:
    """The nine skin sub-regions into the mask, inside the face outline only; the skin into the
    image."""
    size, skin = cv.size, idn.skin
    face = np.zeros((size, size), np.uint8)
    cv2.fillPoly(face, [P["face"]], 1, cv2.LINE_8, _SHIFT)
    part = np.zeros((size, size), np.uint8)
    for name, cid in _SKIN_PARTS:
        cv2.fillPoly(part, [P[name]], cid, cv2.LINE_8, _SHIFT)
    cv2.copyTo(part, face, cv.mask)
    cv.fill(P["face"], _shade(skin, 0.9))
    centre = P["face"].mean(0)
    cv.fill((centre + (P["face"] - centre) * 0.9).astype(np.int32), skin)


def _skin_marks(cv: _Canvas, idn: Identity, lk: Look, P: dict[str, np.ndarray]) -> None:
    """Marks on the skin (image only; later parts hide them where they overlap)."""
    skin = idn.skin
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


def _features(cv: _Canvas, idn: Identity, lk: Look, P: dict[str, np.ndarray]) -> None:
    """Nose, mouth and lips, eyes (closed ones: lashes only), brows."""
    skin = idn.skin
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
    for name in ("eye_r", "eye_l"):
        cid = _SIDED[name]
        if open_eye:
            cv.fill(P[name], (236, 232, 226), cid)
            cv.inside(cid, [(P[name + "_iris"], idn.iris), (P[name + "_pupil"], (12, 10, 10))])
        cv.line(P[name + "_lash"], (30, 22, 20), 0.7)
    for name in ("brow_r", "brow_l"):
        cv.fill(P[name], idn.brow_colour, _SIDED[name])


def _on_top(cv: _Canvas, idn: Identity, lk: Look, P: dict[str, np.ndarray]) -> None:
    """Hair over the forehead, glasses, headwear."""
    if "hair" in P:
        cv.fill(P["hair"], idn.hair_colour, _C["hair"])
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


def _photometry(img: np.ndarray, lk: Look, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Directional light with a colour tint, blur, sensor noise (cv2: fast at any size)."""
    direction, strength, bright = lk.light
    tint = np.asarray(lk.tint, np.float32) * bright
    light = _ramp(img.shape[0],
                  _linear_corners(direction, tint * (1 - strength), tint * (1 + strength)))
    img = cv2.multiply(img, light, dtype=cv2.CV_32F)
    if lk.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), lk.blur * scale)
    if lk.noise > 0:
        n = img.size
        bank = _noise_bank(max(4 * n, 1 << 20))
        o = int(rng.integers(len(bank) - n))
        img = cv2.scaleAdd(bank[o:o + n].reshape(img.shape), lk.noise, img)
    return cv2.convertScaleAbs(cv2.max(img, 0.0))


_PAINTERS = (_behind_face, _face_skin, _skin_marks, _features, _on_top)
"""Painting order, back to front."""


def _draw(idn: Identity, lk: Look, P: dict[str, np.ndarray], size: int,
          scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Paint parts back to front into image and mask, then light, blur and noise the image."""
    cv = _Canvas(size, scale)
    rng = keyed_rng(lk.noise_seed)  # clutter, then the noise offset
    _background(cv, lk, rng)
    for paint in _PAINTERS:
        paint(cv, idn, lk, P)
    return _photometry(cv.img, lk, rng, scale), cv.mask


def render(identity: Identity, look: Look, size: int = 112, frame: str = "aligned") -> Render:
    """Image, exact 25-class mask and 70 landmarks of ``identity`` under ``look`` (see
    ``frame_matrix``)."""
    names, ends, pts = build(identity, look)
    flat = _project(pts, look)
    m = frame_matrix(five_points_from_68(flat[ends[-2]:]), look, size, frame)
    flat = flat @ m[:, :2].T + m[:, 2]
    parts = dict(zip(names, np.split(np.round(flat * _ONE).astype(np.int32), ends[:-1])))
    img, mask = _draw(identity, look, parts, size, math.sqrt(abs(np.linalg.det(m[:, :2]))))
    return Render(img, mask, flat[ends[-2]:].astype(np.float32))


def render_aligned(identity: Identity, rng: np.random.Generator,
                   size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """One ArcFace-aligned face (RGB uint8 HxWx3) and its exact 25-class mask (uint8 HxW)."""
    r = render(identity, sample_look(identity, rng), size, "aligned")
    return r.image, r.mask


def render_image(seed: int, stream: int, ident: int, image: int, size: int = 112,
                 frame: str = "aligned") -> Render:
    """Image ``image`` of identity ``ident`` of ``stream`` exactly as the writers render it
    (``image_spec``)."""
    return render(*image_spec(seed, stream, ident, image), size, frame)
