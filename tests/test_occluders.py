"""Rendered occluders: each hides the part of the face it should, nothing else, the same way for a
seed."""
import numpy as np
import pytest

from fse_plugin import labels, occluders, synth
from fse_plugin.align import ARCFACE_TEMPLATE
from fse_plugin.common import FSEError


@pytest.fixture(scope="module")
def faces():
    """Six aligned synthetic faces with their exact masks."""
    ids = synth.make_identities(6, seed=3)
    return [synth.render_aligned(idn, np.random.default_rng(i)) for i, idn in enumerate(ids)]


EYE_Y = ARCFACE_TEMPLATE[:2, 1].mean()
MOUTH_Y = ARCFACE_TEMPLATE[3:, 1].mean()


@pytest.mark.parametrize("seed", range(5))
def test_each_occluder_covers_its_part_of_the_face(faces, seed):
    img, mask = faces[seed % len(faces)]
    cover = {k: occluders.occluder_layer(k, img.shape[:2], np.random.default_rng(seed))[1] > 0.5
             for k in occluders.OCCLUDERS}
    rows = {k: np.flatnonzero(c.any(1)) for k, c in cover.items()}
    eyes = np.isin(mask, labels.class_ids(["right_eye", "left_eye"]))
    # sunglasses: the eye band, both eyes hidden, nothing below the nose or above the brows' band
    assert eyes[cover["sunglasses"]].sum() >= 0.9 * eyes.sum()
    assert rows["sunglasses"].min() > EYE_Y - 22 and rows["sunglasses"].max() < EYE_Y + 18
    # surgical mask: nose tip to below the mouth, never the eyes
    lips = np.isin(mask, labels.class_ids(["upper_lip", "lower_lip", "mouth"]))
    assert lips[cover["surgical_mask"]].sum() >= 0.95 * lips.sum()
    assert not (cover["surgical_mask"] & eyes).any() and rows["surgical_mask"].min() > EYE_Y + 5
    # hat: above the eyes only, over the forehead
    assert rows["hat"].max() < EYE_Y - 6 and cover["hat"][:20].mean() > 0.5
    # hand: a sizeable blob, mostly over the face's own regions (cheeks .. lips), not the whole
    # picture
    assert 0.05 < cover["hand"].mean() < 0.3
    face = (mask >= 1) & (mask <= 19)
    assert (cover["hand"] & face).sum() > 0.3 * cover["hand"].sum()


@pytest.mark.parametrize("kind", occluders.OCCLUDERS)
def test_only_the_covered_pixels_change_and_a_seed_repeats(faces, kind):
    img, _ = faces[0]
    out = occluders.occlude(img, kind, np.random.default_rng(7))
    _, alpha = occluders.occluder_layer(kind, img.shape[:2], np.random.default_rng(7))
    changed = (out != img).any(2)
    assert changed.any() and not changed[alpha == 0].any()
    assert np.array_equal(out, occluders.occlude(img, kind, np.random.default_rng(7)))
    assert not np.array_equal(out, occluders.occlude(img, kind, np.random.default_rng(8)))
    assert np.array_equal(img, faces[0][0])  # the input is not drawn on


def test_occluders_follow_the_face_points_on_a_larger_image():
    """Five points of a face placed elsewhere in a 224 image: the sunglasses follow the eyes
    there."""
    img = np.full((224, 224, 3), 120, np.uint8)
    points = ARCFACE_TEMPLATE * 1.5 + [30, 40]
    _, alpha = occluders.occluder_layer("sunglasses", img.shape[:2], np.random.default_rng(0),
                                        points)
    for x, y in points[:2]:
        assert alpha[int(y), int(x)] > 0.9
    assert alpha[: int(points[:2, 1].min()) - 30].max() == 0


def test_bad_kind_and_image_are_refused():
    with pytest.raises(FSEError, match="unknown occluder 'scarf'"):
        occluders.Occluder("scarf")
    with pytest.raises(FSEError, match="uint8 HxWx3"):
        occluders.occlude(np.zeros((112, 112), np.uint8), "hat", np.random.default_rng(0))
    assert repr(occluders.Occluder("hat")) == "Occluder('hat')"


def test_the_surgical_mask_keeps_its_old_name_for_now(faces):
    """'mask' (a label map everywhere else in the plugin) still draws the surgical mask, with a
    deprecation note."""
    img, _ = faces[1]
    with pytest.warns(DeprecationWarning, match="'mask' is deprecated; use 'surgical_mask'"):
        old = occluders.occlude(img, "mask", np.random.default_rng(3))
    assert np.array_equal(old, occluders.occlude(img, "surgical_mask", np.random.default_rng(3)))
    # the order seeds the study's probes
    assert occluders.OCCLUDERS == ("sunglasses", "surgical_mask", "hat", "hand")
