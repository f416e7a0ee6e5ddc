"""The 25-class label set: names, ids, the left/right mirror, the FaceSynthetics mapping."""
import numpy as np
import pytest

from fse_plugin import labels as L
from fse_plugin.common import FSEError


def test_classes_in_the_authors_order():
    assert L.NUM_CLASSES == 25 and L.CLASSES[0] == "background" and L.CLASSES[24] == "headwear"
    assert [L.class_id(n) for n in ("right_cheek", "around_left_eye", "nose", "right_eye",
                                    "left_ear", "hair")] == [1, 9, 10, 11, 16, 21]
    # the seed README's typos
    assert L.class_id("Right_Blow") == 13 and L.class_id("headware") == 24
    assert L.class_name(12) == "left_eye" and L.class_id(7) == 7


@pytest.mark.parametrize("bad, what", [("chin", "unknown face class 'chin'"),
                                       (25, "class id 25 outside"), (-1, "class id -1 outside"),
                                       (True, "True is not"), (10.0, "10.0 is not"),
                                       ("10", "'10' is a string of digits.*'nose'.*10"),
                                       (None, "None is not")])
def test_unknown_classes_are_named(bad, what):
    with pytest.raises(FSEError, match=f"--classes: {what}"):
        L.class_id(bad, "--classes")


def test_class_lists():
    """One rule everywhere: names or int ids, a list or a comma string of names; a string is never
    an id."""
    assert L.parse_class_list(None) == list(range(25))
    assert L.parse_class_list("nose, hair,mouth") == [10, 21, 17]
    assert L.parse_class_list(["hair", 0]) == [21, 0] and L.parse_class_list((np.int64(3),)) == [3]
    for spec, what in [("nose, 21", "'21' is a string of digits"),
                       (["nose", 10], "'nose' given twice"), ([], "empty"),
                       ("nose,,mouth", "empty name"), (7, "must be a list"),
                       ({"nose"}, "must be a list")]:
        with pytest.raises(FSEError, match=f"^config.fse.classes: .*{what}"):
            L.parse_class_list(spec, "config.fse.classes")
    assert L.parse_class_list([], allow_empty=True) == []


def test_mirror_swaps_exactly_the_pairs():
    assert np.array_equal(L.MIRROR[L.MIRROR], np.arange(25))  # an involution
    for a, b in L.MIRROR_PAIRS:
        assert L.CLASSES[a].replace("right", "left") == L.CLASSES[b]
        assert L.MIRROR[a] == b and L.MIRROR[b] == a
    unpaired = set(range(25)) - {c for p in L.MIRROR_PAIRS for c in p}
    assert all(L.MIRROR[c] == c for c in unpaired)
    assert (L.MIRROR_LUT.dtype == np.uint8 and L.MIRROR_LUT[255] == 255
            and np.array_equal(L.MIRROR_LUT[:25], L.MIRROR))


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_flip_mask_moves_pixels_and_swaps_ids(dtype):
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 25, (7, 9)).astype(dtype)
    mask[0, 0] = 255
    flipped = L.flip_mask(mask)
    assert flipped.dtype == dtype and flipped.flags.c_contiguous
    np.testing.assert_array_equal(
        flipped, np.where(mask == 255, 255, L.MIRROR[np.minimum(mask, 24)])[:, ::-1])
    np.testing.assert_array_equal(L.flip_mask(flipped), mask)


def test_colorize_and_facesynthetics_mapping():
    mask = np.array([[0, 10], [21, 24]], np.uint8)
    assert (L.colorize(mask).shape == (2, 2, 3)
            and np.array_equal(L.colorize(mask)[0, 1], L.PALETTE[10]))
    with pytest.raises(ValueError, match="HxW"):
        L.colorize(np.zeros((1, 2, 2), np.uint8))
    skin = L.FS19_CLASSES.index("SKIN")
    assert all(L.L25_TO_FS19[c] == skin for c in L.SKIN_IDS)
    for i, name in enumerate(L.FS19_CLASSES):
        if L.FS19_TO_25[i] >= 0:
            assert L.L25_TO_FS19[L.FS19_TO_25[i]] == i, name
    assert L.FS19_TO_25[skin] == -1 and L.FS19_TO_25[L.FS19_CLASSES.index("BEARD")] == -1


def test_side_rule_per_class():
    """As the authors' labels_25 maps lie: skin parts by the subject's sides, eyes/brows/ears by the
    image's."""
    assert [L.CLASSES[k] for k in range(25) if L.SIDE[k] == "subject"] == [
        "right_cheek", "left_cheek", "right_chin", "left_chin", "right_forehead", "left_forehead",
        "around_right_eye", "around_left_eye"]
    assert [L.CLASSES[k] for k in range(25) if L.SIDE[k] == "image"] == [
        "right_eye", "left_eye", "right_brow", "left_brow", "right_ear", "left_ear"]
    paired = {c for p in L.MIRROR_PAIRS for c in p}
    # a sided class has a mirror partner
    assert {k for k in range(25) if L.SIDE[k] is not None} == paired
    assert all(L.SIDE[a] == L.SIDE[b] for a, b in L.MIRROR_PAIRS)
