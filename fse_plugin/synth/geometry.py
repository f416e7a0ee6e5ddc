"""Face geometry in the canonical aligned 112x112 frame: every part as 2-D points with a depth.

Parts are named by the subject's side: suffix ``_r`` is the subject's right, on the image-left of
the canonical (frontal, unflipped) face, ``_l`` the subject's left. Which class id a part gets is
``rendering``'s business, since the label set names some classes by the subject's side and some by
the image's (``labels.SIDE``). Depth z points toward the camera: the head surface is an ellipsoid,
and parts sit on it (``surface``) or at a fixed depth (``add``), so a yawed head hides the far ear
and moves the nose more than the outline. :func:`build` lists all parts of one face and its 70
landmarks (68 iBUG points, point 0 on the image-left; the image-left pupil; the image-right pupil).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np

from fse_plugin.synth.identity import X0, Identity, Look

__all__ = ["build", "ellipse"]


def _curve(ctrl: np.ndarray, n: int) -> np.ndarray:
    """Bezier curve through control points (quadratic or cubic), n samples."""
    t = np.linspace(0, 1, n)[:, None]
    c = np.asarray(ctrl, np.float64)
    if len(c) == 3:
        return (1 - t) ** 2 * c[0] + 2 * (1 - t) * t * c[1] + t ** 2 * c[2]
    return ((1 - t) ** 3 * c[0] + 3 * (1 - t) ** 2 * t * c[1] + 3 * (1 - t) * t ** 2 * c[2]
            + t ** 3 * c[3])


@lru_cache(maxsize=512)
def _unit(n: int, t0: float, t1: float, power: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(t0, t1, n, endpoint=(t1 - t0) < 2 * math.pi - 1e-9)
    c, s = np.cos(t), np.sin(t)
    return np.sign(c) * np.abs(c) ** (2 / power), np.sign(s) * np.abs(s) ** (2 / power)


def ellipse(cx: float, cy: float, ax: float, ay: float, n: int = 16, rot: float = 0.0,
            arc: tuple[float, float] = (0.0, 2 * math.pi), power: float = 2.0) -> np.ndarray:
    """``n`` points on a (super)ellipse from angle ``arc[0]`` to ``arc[1]``; power > 2 gives rounded
    rectangles."""
    ux, uy = _unit(n, float(arc[0]), float(arc[1]), float(power))
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
    """Collects named parts (canonical 2-D points with a depth): z = head surface + offset, or as
    given.

    Also holds the face's derived measures that several parts share and its 70 landmarks (``lm``,
    with depth offsets ``lz``), filled in by the part builders.
    """

    def __init__(self, idn: Identity, lk: Look):
        self.idn, self.lk = idn, lk
        self.o = 9.0 * lk.mouth_open  # mouth opening (jaw drop) in px
        self.chin_y = idn.chin_y + 0.6 * self.o
        self.jt = idn.eye_y + 1.0  # where the jaw curve starts (iBUG point 0 height)
        self.brow_low = idn.eye_y - idn.brow_gap - 2.5 * lk.brow_raise  # lower edge of the brows
        # lower edge of the foreheads
        self.y_fh = self.brow_low - idn.brow_thick - idn.brow_arch - 1.5
        self.mouth_w = idn.mouth_w * (1 + 0.1 * lk.smile)  # half width
        self.yc = (idn.skull_top + self.chin_y) / 2
        self.hy = (self.chin_y - idn.skull_top) / 2 * 1.08
        self.lm = np.zeros((70, 2))
        self.lz = np.zeros(70)
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

    def add(self, name: str, pts: np.ndarray | list, z: float | np.ndarray,
            on_surface: bool = False) -> None:
        pts = np.asarray(pts, np.float64)
        self.names.append(name)
        self.pts.append(pts)
        self.zs.append(np.full(len(pts), z) if np.ndim(z) == 0 else np.asarray(z, np.float64))
        self.on_surface.append(on_surface)

    def finish(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Adds the landmarks as the last part 'ldmk'; (names, cumulative ends, all points N x 3),
        surface depths computed in one pass."""
        lz = self.z(self.lm) + self.lz
        lz[:17] = 0.0  # the jaw line is the outline
        self.add("ldmk", self.lm, lz)
        sizes = [len(p) for p in self.pts]
        flat = np.empty((sum(sizes), 3))
        flat[:, :2] = np.concatenate(self.pts)
        flat[:, 2] = (np.concatenate(self.zs)
                      + np.repeat(self.on_surface, sizes) * self.z(flat[:, :2]))
        return self.names, np.cumsum(sizes), flat


def _outline(g: _Geo) -> None:
    """Face outline: the jaw (iBUG 0..16) and the skull arc back over the top."""
    idn, fw, jt, chin_y = g.idn, g.idn.face_w, g.jt, g.chin_y
    th = np.linspace(0, math.pi / 2, 9)
    e = 2 / idn.face_sq
    jx = fw * np.cos(th) ** e * (1 - idn.chin_narrow * np.sin(th) ** 4)
    jy = jt + (chin_y - jt) * np.sin(th) ** e
    jaw = np.concatenate([np.stack([X0 - jx, jy], 1), _mirror(np.stack([X0 - jx, jy], 1)[-2::-1])])
    g.lm[:17] = jaw
    skull = ellipse(X0, jt, fw, jt - idn.skull_top, 15, arc=(0, -math.pi))[1:-1]
    g.add("face", np.concatenate([jaw, skull]), 0.0)


def _neckline(lk: Look, nw: float, chin_y: float) -> tuple[np.ndarray, float]:
    """The collar's edge across the neck and the height of its sides."""
    if lk.collar == "turtle":
        yn = chin_y + 1 + 6 * lk.collar_y
        return np.array([[X0 - nw * 1.2, yn - 3], [X0, yn], [X0 + nw * 1.2, yn - 3]]), yn
    if lk.collar == "v":
        yn = chin_y + 8 + 14 * lk.collar_y
        return np.array([[X0 - nw * 1.1, yn], [X0, yn + 12 + 14 * lk.collar_y],
                         [X0 + nw * 1.1, yn]]), yn
    if lk.collar == "shirt":
        yn = chin_y + 6 + 10 * lk.collar_y
        return np.array([[X0 - nw * 1.15, yn - 6], [X0 - nw * 0.3, yn + 8], [X0, yn + 14],
                         [X0 + nw * 0.3, yn + 8], [X0 + nw * 1.15, yn - 6]]), yn
    yn = chin_y + 8 + 16 * lk.collar_y
    return _curve([[X0 - nw * 1.1, yn], [X0, yn + 16], [X0 + nw * 1.1, yn]], 7), yn


def _behind_head(g: _Geo) -> None:
    """Long hair behind the head, the neck and the clothing."""
    idn, lk, fw, jt, chin_y = g.idn, g.lk, g.idn.face_w, g.jt, g.chin_y
    style, vol = lk.hair_style, lk.hair_volume
    if style in ("long", "medium"):
        bottom = chin_y + (lk.hair_len if style == "long" else lk.hair_len * 0.25)
        wb = fw * vol * 1.12
        back = np.concatenate([ellipse(X0, jt, wb, (jt - idn.skull_top) * vol + 2, 13,
                                       arc=(0, -math.pi)),
                               [[X0 - wb - 2, bottom], [X0 + wb + 2, bottom]]])
        g.add("hair_back", back, -25.0)
    nw = fw * idn.neck_ratio
    g.add("neck", [[X0 - nw, chin_y - 24], [X0 + nw, chin_y - 24], [X0 + nw * 1.05, chin_y + 20],
                   [X0 + nw * 1.3, 400], [X0 - nw * 1.3, 400], [X0 - nw * 1.05, chin_y + 20]],
          -10.0)
    neckline, yn = _neckline(lk, nw, chin_y)
    right_sh = [[X0 + nw * 1.1 + 14, yn + 3], [X0 + 72, yn + 14], [X0 + 118, yn + 40],
                [X0 + 220, yn + 90], [X0 + 220, 420]]
    g.add("clothing", np.concatenate([neckline, right_sh, _mirror(np.array(right_sh))[::-1]]), -4.0)


def _ears(g: _Geo) -> None:
    """Ears, each with an inner fold (drawn before the face, which covers their inner part)."""
    idn = g.idn
    ear_y = idn.eye_y + 8 + idn.ear_dy
    for side, name in ((-1, "ear_r"), (1, "ear_l")):
        ex = X0 + side * (idn.face_w + idn.ear_w * 0.12)
        g.add(name, ellipse(ex, ear_y, idn.ear_w / 2, idn.ear_h / 2, 14, rot=side * 0.15), -6.0)
        g.add(name + "_in", ellipse(ex + side * idn.ear_w * 0.12, ear_y + 1, idn.ear_w * 0.22,
                                    idn.ear_h * 0.3, 10, rot=side * 0.15), -6.0)


def _strands(g: _Geo) -> None:
    """Long hair hanging beside the face (in front of the ears unless tucked behind them)."""
    lk, fw, ey = g.lk, g.idn.face_w, g.idn.eye_y
    style = lk.hair_style
    if style not in ("long", "medium") or not lk.hair_over_ears:
        return
    end = g.chin_y + (lk.hair_len * 0.8 if style == "long" else -8 + lk.hair_len * 0.1)
    strand = np.array([[X0 - fw * 0.9, ey - 18], [X0 - fw * lk.hair_volume * 1.12, ey - 4],
                       [X0 - fw * 1.22, ey + 20],
                       [X0 - fw * 1.25, end], [X0 - fw * 0.95, end - 4], [X0 - fw * 0.9, ey + 12]])
    g.add("strand_r", strand, -2.0)
    g.add("strand_l", _mirror(strand), -2.0)


def _skin_regions(g: _Geo) -> None:
    """The nine skin sub-regions: cheeks by the midline, foreheads, around-eyes and chins on top."""
    idn, ey, y_fh = g.idn, g.idn.eye_y, g.y_fh
    gm = 7.5  # half width of the middle forehead strip
    inner = X0 - idn.eye_dx + idn.eye_w + 2.0  # inner edge of the right around-eye region
    midline = np.array([[X0, -90], [X0, ey - 4], [X0, ey + 20], [X0, g.chin_y + 10], [X0, 420]])
    g.surface("sk_half_r", np.concatenate([midline, [[-200, 420], [-200, -90]]]))
    g.surface("sk_half_l", np.concatenate([midline, [[300, 420], [300, -90]]]))
    fh_r = np.array([[-90, -90], [X0 - gm, -90], [X0 - gm, y_fh], [-90, y_fh + 4]])
    g.surface("sk_fh_r", fh_r)
    g.surface("sk_fh_l", _mirror(fh_r))
    g.surface("sk_fh_m", [[X0 - gm, -90], [X0 + gm, -90], [X0 + gm, y_fh], [X0 + 3.5, ey + 2],
                          [X0 - 3.5, ey + 2], [X0 - gm, y_fh]])
    ae_r = np.array([[-90, y_fh + 4], [X0 - gm, y_fh], [X0 - 3.5, ey + 2], [inner - 1, ey + 7],
                     [X0 - idn.eye_dx, ey + 9.5], [X0 - idn.eye_dx - idn.eye_w - 4, ey + 8],
                     [-90, ey + 6]])
    g.surface("sk_ae_r", ae_r)
    g.surface("sk_ae_l", _mirror(ae_r))
    my, lm4 = idn.mouth_y, g.lm[4]
    ch_r = np.array([[X0, my + 1.5 + g.o + idn.lip_lo], [X0 - g.mouth_w - 2, my + 1 + 0.5 * g.o],
                     lm4, [-90, lm4[1] + 10], [-90, 420], [X0, 420]])
    g.surface("sk_ch_r", ch_r)
    g.surface("sk_ch_l", _mirror(ch_r))


def _skin_marks(g: _Geo) -> None:
    """Marks drawn into the image only: moles, freckles, forehead wrinkles, blush, dimple."""
    idn, ey = g.idn, g.idn.eye_y
    if len(idn.moles):
        g.surface("moles", idn.moles[:, :2], 0.5)
    if len(idn.freckles):
        g.surface("freckles", idn.freckles, 0.5)
    for k in range(idn.wrinkles):
        yw = (idn.hairline + g.y_fh) / 2 + (k - idn.wrinkles / 2) * 4
        g.surface(f"wrinkle{k}", _curve([[X0 - 14, yw + 1], [X0, yw - 1.5], [X0 + 14, yw + 1]], 7),
                  0.5)
    if idn.blush > 0:
        g.surface("blush_r", ellipse(X0 - idn.eye_dx - 2, ey + 16, 7, 4.5, 10), 0.3)
        g.surface("blush_l", ellipse(X0 + idn.eye_dx + 2, ey + 16, 7, 4.5, 10), 0.3)
    if idn.dimple:
        g.surface("dimple", [[X0 - 1.5, g.chin_y - 6], [X0 + 1.5, g.chin_y - 6]], 0.5)


def _nose(g: _Geo) -> None:
    """Nose, nostrils, highlight; iBUG 27..35."""
    idn, ey = g.idn, g.idn.eye_y
    tip, base = idn.nose_tip, idn.nose_tip + 4.0
    aw, bw = idn.nose_w, idn.nose_bridge
    half = np.array([[X0, ey - 2], [X0 - bw * 0.8, ey - 2], [X0 - bw, (ey + tip) / 2],
                     [X0 - aw * 0.75, tip - 3],
                     [X0 - aw, tip + 0.5], [X0 - aw * 0.8, base - 0.5],
                     [X0 - aw * 0.35, base + 0.3]])
    zoff = np.array([4, 4, 7, 9, 5, 5, 8.0])
    nose = np.concatenate([half, [[X0, base + 0.6]], _mirror(half[::-1])])[1:]
    nz = np.concatenate([zoff, [9.0], zoff[::-1]])[1:]
    g.surface("nose", nose, nz)
    for side, name in ((-1, "nostril_r"), (1, "nostril_l")):
        g.surface(name, ellipse(X0 + side * aw * 0.45, base - 1.2, aw * 0.28, 1.0, 8), 8.0)
    g.surface("nose_hl", [[X0, ey + 4], [X0, tip - 1]], 10.0)
    g.lm[27:31] = np.stack([np.full(4, X0), ey + (tip - ey) * np.arange(4) / 3], 1)
    g.lz[27:31] = [4, 7, 10, 13]
    g.lm[31:36] = [[X0 - aw * 0.7, base - 1], [X0 - aw * 0.35, base], [X0, base + 0.4],
                   [X0 + aw * 0.35, base], [X0 + aw * 0.7, base - 1]]
    g.lz[31:36] = [6, 8, 9, 8, 6]


def _mouth(g: _Geo) -> None:
    """Lips, the open mouth with teeth, iBUG 48..67: contours over u in [-1, 1]."""
    idn, lk, o = g.idn, g.lk, g.o
    uu = np.linspace(-1, 1, 15)
    w = 1 - uu ** 2
    cy = idn.mouth_y - lk.smile * 2.5 * uu ** 2
    x = X0 + g.mouth_w * uu
    up_out = np.stack([x, cy - idn.lip_up * w ** 0.6
                       + 0.5 * idn.lip_up * np.exp(-(uu / 0.12) ** 2)], 1)
    up_in = np.stack([x, cy - (0.3 + 0.15 * o) * w], 1)
    lo_in = np.stack([x, cy + (0.3 + o) * w ** 0.8], 1)
    lo_out = np.stack([x, lo_in[:, 1] + idn.lip_lo * w ** 0.6], 1)
    lipz = 1 + 4 * w
    g.surface("lip_up", np.concatenate([up_out, up_in[::-1]]), np.concatenate([lipz, lipz[::-1]]))
    g.surface("lip_lo", np.concatenate([lo_in, lo_out[::-1]]), np.concatenate([lipz, lipz[::-1]]))
    if o > 0.7:
        g.surface("mouth", np.concatenate([up_in, lo_in[::-1]]),
                  np.concatenate([lipz, lipz[::-1]]) - 1)
        g.surface("teeth", np.concatenate([up_in[2:-2], up_in[-3:1:-1] + [0, min(0.45 * o, 3.0)]]),
                  3.0)

    def at(curve: np.ndarray, us: Sequence[float]) -> np.ndarray:
        return np.stack([np.interp(us, uu, curve[:, 0]), np.interp(us, uu, curve[:, 1])], 1)

    lm = g.lm
    lm[48], lm[54] = up_out[0], up_out[-1]
    lm[49:54] = at(up_out, [-0.62, -0.28, 0, 0.28, 0.62])
    lm[55:60] = at(lo_out, [0.62, 0.28, 0, -0.28, -0.62])
    lm[60], lm[64] = at(up_in, [-0.9])[0], at(up_in, [0.9])[0]
    lm[61:64] = at(up_in, [-0.4, 0, 0.4])
    lm[65:68] = at(lo_in, [0.4, 0, -0.4])
    g.lz[48:68] = 3


def _eyes(g: _Geo) -> None:
    """Eyes with lashes, irises and pupils; iBUG 36..41 (image-left eye), 42..47, pupils 68 and
    69."""
    idn, lk, ey = g.idn, g.lk, g.idn.eye_y
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
        r = idn.iris_r * idn.eye_w
        g.surface(name + "_iris", ellipse(pupil[0], pupil[1], r, r, 12), 0)
        g.surface(name + "_pupil", ellipse(pupil[0], pupil[1], r * 0.45, r * 0.45, 8), 0.2)
        if side < 0:  # image-left eye: outer corner first
            g.lm[36:42] = [upper[0], upper[3], upper[5], upper[8], lower[3], lower[5]]
        else:  # image-right eye: inner corner first (iBUG order runs left to right)
            g.lm[42:48] = [upper[8], upper[5], upper[3], upper[0], lower[5], lower[3]]
        g.lm[68 if side < 0 else 69] = pupil
        g.lz[first:first + 6] = -1


def _brows(g: _Geo) -> None:
    """Brows; iBUG 17..21 (image-left brow, outer to inner) and 22..26 (inner to outer)."""
    idn = g.idn
    for side, name in ((-1, "brow_r"), (1, "brow_l")):
        t = np.linspace(0, 1, 9)
        xin = X0 + side * (idn.eye_dx - idn.eye_w + 1.0)
        bx = xin + side * idn.brow_len * t
        by = g.brow_low - idn.brow_arch * np.sin(math.pi * t ** 0.8) + idn.brow_slope * t
        thick = idn.brow_thick * (1 - 0.45 * t)
        g.surface(name,
                  np.concatenate([np.stack([bx, by], 1), np.stack([bx, by - thick], 1)[::-1]]), 1.0)
        centre = np.stack([bx, by - thick / 2], 1)[[0, 2, 4, 6, 8]]
        if side < 0:
            g.lm[17:22] = centre[::-1]
        else:
            g.lm[22:27] = centre
        g.lz[17:27] = 1


def _hair(g: _Geo) -> None:
    """Hair on the head, over the forehead down to its hairline or fringe."""
    idn, lk, fw, ey = g.idn, g.lk, g.idn.face_w, g.idn.eye_y
    style, vol = lk.hair_style, lk.hair_volume
    if style == "bald":
        return
    hl = idn.hairline + (8 if style == "receding" else 0)
    side_bottom = ey - 6 if style in ("short", "receding") else ey + 4
    outer = ellipse(X0, g.jt, fw * vol, (g.jt - idn.skull_top) * vol + 3, 17,
                    arc=(math.pi, 2 * math.pi))
    outer = np.concatenate([[[X0 - fw * vol, side_bottom]], outer, [[X0 + fw * vol, side_bottom]]])
    if style == "bangs":
        xs = np.linspace(X0 + fw * 0.8, X0 - fw * 0.8, 11)
        fringe = g.y_fh - 1 + 1.5 * np.tile([0, 1.0], 6)[:11] + 3 * ((xs - X0) / fw) ** 2
        line = np.stack([xs, fringe], 1)
    else:
        line = np.array([[X0 + fw * 0.75, hl + 6], [X0 + fw * 0.4, hl + 1],
                         [X0 + idn.hair_part * 0.3, hl],
                         [X0 - fw * 0.4, hl + 1], [X0 - fw * 0.75, hl + 6]])
    hairline = np.concatenate([[[X0 + fw - 1.0, side_bottom], [X0 + fw * 0.97, ey - 10]], line,
                               [[X0 - fw * 0.97, ey - 10], [X0 - fw + 1.0, side_bottom]]])
    g.surface("hair", np.concatenate([outer, hairline]), 3.0)


def _glasses(g: _Geo) -> None:
    """Rims, bridge and temples (sunglasses' opaque lenses are the renderer's)."""
    idn, lk, ey = g.idn, g.lk, g.idn.eye_y
    if lk.glasses is None:
        return
    extra, lh, rim = lk.glasses_size
    lw = idn.eye_w + extra
    for side, name in ((-1, "lens_r"), (1, "lens_l")):
        ex = X0 + side * idn.eye_dx
        if lk.glasses == "round":
            lens = ellipse(ex, ey + 0.5, lw, lh, 18)
        else:
            lens = ellipse(ex, ey + 0.5, lw, lh * (1.25 if lk.glasses == "sun" else 1.0), 18,
                           power=4.0)
        g.surface(name, lens, 9.0)
        g.add(name + "_temple",
              [[ex + side * lw, ey - lh * 0.3], [X0 + side * (idn.face_w + 2), ey - 1]],
              np.array([idn.depth * 0.6 + 6, -4.0]))
    g.surface("bridge", _curve([[X0 - idn.eye_dx + lw, ey - lh * 0.3], [X0, ey - lh * 0.9],
                                [X0 + idn.eye_dx - lw, ey - lh * 0.3]], 5), 10.0)


def _headwear(g: _Geo) -> None:
    """Band, cap, hat or beanie over the hairline."""
    idn, lk, fw = g.idn, g.lk, g.idn.face_w
    kind = lk.headwear
    if kind is None:
        return
    yb = (idn.hairline if lk.hair_style != "receding" else idn.hairline + 8) + lk.headwear_y
    if kind == "band":
        arc = _curve([[X0 - fw * 1.02, yb + 2], [X0, yb - 4], [X0 + fw * 1.02, yb + 2]], 9)
        g.surface("headwear", np.concatenate([arc, (arc + [0, 5.5])[::-1]]), 4.0)
        return
    ax = fw * (0.95 if kind == "hat" else 1.1)
    h_top = (g.jt - idn.skull_top) * lk.hair_volume + (16 if kind == "hat" else 6)
    dome = ellipse(X0, g.jt, ax, h_top, 17, arc=(math.pi, 2 * math.pi))
    dome = dome[dome[:, 1] <= yb]
    g.surface("headwear", np.concatenate([[[X0 - ax, yb + 2]], dome, [[X0 + ax, yb + 2]]]), 6.0)
    if kind == "cap":
        g.surface("brim",
                  _curve([[X0 + fw * 0.85, yb], [X0 + fw * 0.5, yb + 9], [X0 - fw * 0.5, yb + 9],
                          [X0 - fw * 0.85, yb]], 9), 14.0)
    elif kind == "hat":
        g.surface("brim", ellipse(X0, yb + 1, fw * 1.75, 4.5, 18), 6.0)
    else:  # beanie fold (image only)
        g.surface("fold",
                  [[X0 - ax, yb + 2], [X0 + ax, yb + 2], [X0 + ax, yb - 4], [X0 - ax, yb - 4]], 6.0)


_PARTS = (_outline, _behind_head, _ears, _strands, _skin_regions, _skin_marks, _nose, _mouth, _eyes,
          _brows, _hair, _glasses, _headwear)
"""Part builders in drawing order, back to front (the outline first: the chins need its
landmarks)."""


def build(idn: Identity, lk: Look) -> tuple[list[str], np.ndarray, np.ndarray]:
    """All parts of one face in the canonical frame (see ``_Geo.finish``); the last part is 'ldmk'
    (70)."""
    g = _Geo(idn, lk)
    for part in _PARTS:
        part(g)
    return g.finish()
