"""ArcFace 112x112 alignment: 5 points, a similarity transform, and warps that keep labels exact.

Images are warped bilinearly; label maps only nearest-neighbour, or class ids would blend into
ids of unrelated classes along region borders.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["ARCFACE_TEMPLATE", "align_image", "align_mask", "estimate_norm", "five_points_from_68",
           "similarity_transform"]

ARCFACE_TEMPLATE: np.ndarray = np.array([
    [38.2946, 51.6963],  # image-left eye
    [73.5318, 51.5014],  # image-right eye
    [56.0252, 71.7366],  # nose tip
    [41.5493, 92.3655],  # image-left mouth corner
    [70.7299, 92.2041],  # image-right mouth corner
], dtype=np.float32)
"""insightface's 5-point template for 112x112 crops (x already shifted by +8)."""


def five_points_from_68(ldmks: np.ndarray) -> np.ndarray:
    """The 5 alignment points from 68 iBUG landmarks (extra rows such as pupils are ignored)."""
    p = np.asarray(ldmks, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 68 or p.shape[1] < 2:
        raise ValueError(f"expected at least 68 landmarks of (x, y), got shape {p.shape}")
    eyes = p[36:40:3, :2].mean(0), p[42:46:3, :2].mean(0)  # mean of each eye's two corners
    return np.stack([*eyes, p[30, :2], p[48, :2], p[54, :2]]).astype(np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src to dst (Umeyama
    1991).

    Returns the 2x3 matrix for ``cv2.warpAffine``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2:
        raise ValueError(f"point sets must both be Nx2, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var_s = (s ** 2).sum() / len(src)
    scale = (sig * sign).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def estimate_norm(points5: np.ndarray, size: int = 112) -> np.ndarray:
    """2x3 transform from 5 image points to the ArcFace template scaled to ``size``."""
    return similarity_transform(points5, ARCFACE_TEMPLATE * (size / 112.0))


def align_image(img: np.ndarray, points5: np.ndarray, size: int = 112) -> np.ndarray:
    """Aligned size x size crop of an image (bilinear)."""
    return cv2.warpAffine(img, estimate_norm(points5, size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align_mask(mask: np.ndarray, points5: np.ndarray, size: int = 112, border: int = 0
               ) -> np.ndarray:
    """Aligned crop of a label map (nearest-neighbour only; outside pixels get ``border``)."""
    return cv2.warpAffine(mask, estimate_norm(points5, size), (size, size), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=int(border))
