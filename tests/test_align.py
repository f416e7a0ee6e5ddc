"""Alignment helpers: 5 points from 68, the Umeyama similarity, ArcFace warps (images bilinear,
labels nearest)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fse_plugin.align import (ARCFACE_TEMPLATE, align_image, align_mask, estimate_norm,
                              five_points_from_68, similarity_transform)


def _similarity(angle_deg: float, scale: float, t: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), t[0]],
                     [scale * np.sin(a), scale * np.cos(a), t[1]]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def test_arcface_template_values():
    np.testing.assert_allclose(ARCFACE_TEMPLATE, [[38.2946, 51.6963], [73.5318, 51.5014],
                                                  [56.0252, 71.7366], [41.5493, 92.3655],
                                                  [70.7299, 92.2041]], atol=1e-4)


def test_five_points_from_68_uses_ibug_indices():
    l68 = np.zeros((70, 2))  # FaceSynthetics: 68 iBUG points + 2 pupils (ignored)
    l68[36], l68[39], l68[42], l68[45] = (10, 20), (20, 22), (40, 20), (50, 24)
    l68[30], l68[48], l68[54], l68[68], l68[69] = ((30, 40), (18, 60), (42, 61), (999, 999),
                                                   (999, 999))
    np.testing.assert_allclose(five_points_from_68(l68),
                               [[15, 21], [45, 22], [30, 40], [18, 60], [42, 61]])
    with pytest.raises(ValueError, match="68"):
        five_points_from_68(np.zeros((5, 2)))


@pytest.mark.parametrize("angle,scale,t", [(0, 1, (0, 0)), (17, 2.5, (-30, 12)),
                                           (-160, 0.4, (5, 300))])
def test_similarity_transform_recovers_exact_similarity(angle, scale, t):
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    m = _similarity(angle, scale, t)
    est = similarity_transform(src, _apply(m, src))
    np.testing.assert_allclose(est, m, atol=1e-9)


def test_similarity_transform_matches_opencv_least_squares():
    rng = np.random.default_rng(1)
    src = rng.uniform(100, 400, (5, 2))
    # noisy: least squares, not exact
    dst = _apply(_similarity(8, 0.3, (10, -4)), src) + rng.normal(0, 1.5, (5, 2))
    ours = similarity_transform(src, dst)
    # LMEDS keeps all points when the fit is good
    cv, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    refined, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=1e9)
    resid = lambda m: np.square(_apply(m, src) - dst).sum()  # noqa: E731
    # least squares is optimal among similarities
    assert resid(ours) <= min(resid(cv), resid(refined)) + 1e-9
    assert np.linalg.det(ours[:, :2]) > 0  # a rotation, never a reflection


def test_similarity_transform_refuses_reflection_and_bad_shapes():
    src = np.array([[0, 0], [4, 0], [0, 1], [1, 3.0]])
    m = similarity_transform(src, src * [-1, 1])  # a mirror image cannot be reached by a similarity
    assert np.linalg.det(m[:, :2]) > 0  # Umeyama's sign fix: the best rotation, not the reflection
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))


@pytest.mark.parametrize("size", [112, 224])
def test_estimate_norm_maps_points_onto_template(size):
    m_in = _similarity(-12, 3.1, (140, 90))
    # a face whose landmarks are an exact similarity
    p5 = _apply(m_in, ARCFACE_TEMPLATE.astype(np.float64))
    np.testing.assert_allclose(_apply(estimate_norm(p5, size), p5), ARCFACE_TEMPLATE * size / 112,
                               atol=1e-6)


def test_align_image_and_mask():
    size = 112
    m_in = _similarity(20, 2.0, (250, 240))  # aligned -> source image
    canon = np.zeros((size, size), np.uint8)
    canon[30:60, 20:50], canon[30:60, 62:92], canon[70:100, 40:72] = 11, 12, 17
    src_mask = cv2.warpAffine(canon, m_in, (512, 512), flags=cv2.INTER_NEAREST)
    src_img = np.dstack([src_mask * 10, src_mask * 5, 255 - src_mask * 10]).astype(np.uint8)
    p5 = _apply(m_in, ARCFACE_TEMPLATE.astype(np.float64))
    mask = align_mask(src_mask, p5, size)
    assert mask.dtype == np.uint8 and mask.shape == (size, size)
    assert set(np.unique(mask)) <= {0, 11, 12, 17}  # nearest: no blended ids
    assert (mask == canon).mean() > 0.99  # only region borders may move by one pixel
    img = align_image(src_img, p5, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    # inside a region, bilinear = the region colour
    np.testing.assert_array_equal(img[45, 35], [110, 55, 145])
    assert align_mask(src_mask, p5, size, border=255)[0, 0] in (0, 255)
