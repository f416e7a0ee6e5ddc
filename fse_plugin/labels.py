"""The 25-class face-semantic label set of FSErasing and the 19-class FaceSynthetics set.

Left and right follow the authors' labels_25 maps, and they name different classes by different
sides. The nine skin parts, which the authors cut from MediaPipe Face Mesh, are named by the
*subject's* sides: right_cheek lies on the image-left of a frontal face. The eyes, brows and ears,
kept from FaceSynthetics' own classes, are named by the *image's* sides: right_eye lies on the
image-right. ``SIDE`` records the rule per class. Where each class lies in a frontal ArcFace-aligned
112x112 face (midline x = 56; "x" are mean positions measured on eight of the authors' maps):

==  =================  =========  ================================================
id  class              side rule  lies on
==  =================  =========  ================================================
1   right_cheek        subject    image-left  (1, 3, 5, 8 together: mean x ~30)
2   left_cheek         subject    image-right (2, 4, 6, 9 together: mean x ~70)
3   right_chin         subject    image-left
4   left_chin          subject    image-right
5   right_forehead     subject    image-left
6   left_forehead      subject    image-right
7   middle_forehead    none       the midline
8   around_right_eye   subject    image-left, round the image-left eye
9   around_left_eye    subject    image-right, round the image-right eye
11  right_eye          image      image-right (x ~70)
12  left_eye           image      image-left  (x ~37)
13  right_brow         image      image-right (x ~72)
14  left_brow          image      image-left  (x ~38)
15  right_ear          image      image-right edge (x ~98)
16  left_ear           image      image-left edge  (x ~6)
==  =================  =========  ================================================

All other classes (background, nose, mouth, lips, neck, hair, clothing, glasses, headwear) have no
side. So around_right_eye (8, image-left) surrounds left_eye (12, image-left). A horizontal flip
moves every pixel to the other side of the image, so under either rule each sided class must swap
with its partner (``MIRROR``) for the mask to keep telling the truth; ``flip_mask`` does both.
"""
from __future__ import annotations

from typing import Any, Iterable

import cv2
import numpy as np

from fse_plugin.common.errors import FSEError

__all__ = ["CLASSES", "NUM_CLASSES", "LABEL_SET", "SKIN_IDS", "IGNORE_INDEX", "MIRROR_PAIRS",
           "SIDE", "MIRROR", "MIRROR_LUT", "PALETTE", "FS19_CLASSES", "FS19_IGNORE", "FS19_TO_25",
           "L25_TO_FS19", "class_id", "class_ids", "class_name", "colorize", "flip_mask",
           "parse_class_list"]

CLASSES: tuple[str, ...] = (
    "background", "right_cheek", "left_cheek", "right_chin", "left_chin",
    "right_forehead", "left_forehead", "middle_forehead", "around_right_eye", "around_left_eye",
    "nose", "right_eye", "left_eye", "right_brow", "left_brow",
    "right_ear", "left_ear", "mouth", "upper_lip", "lower_lip",
    "neck", "hair", "clothing", "glasses", "headwear",
)
NUM_CLASSES = len(CLASSES)
LABEL_SET = "fse25"
"""Name of this label set, stored in parser checkpoints and mask-cache manifests."""
SKIN_IDS: tuple[int, ...] = tuple(range(1, 10))
IGNORE_INDEX = 255
"""Label value of pixels no class claims (FaceSynthetics' IGNORE, borders an augmentation invents):
losses and metrics skip it, flips keep it."""

MIRROR_PAIRS: tuple[tuple[int, int], ...] = ((1, 2), (3, 4), (5, 6), (8, 9), (11, 12), (13, 14),
                                             (15, 16))

SIDE: tuple[str | None, ...] = tuple(
    "subject" if 1 <= k <= 9 and k != 7 else "image" if 11 <= k <= 16 else None
    for k in range(len(CLASSES)))
"""SIDE[k]: whose side the name of class k refers to: 'subject' (right_* on the image-left of a
frontal face), 'image' (right_* on the image-right), or None for classes without a side (see the
table above)."""


def _mirror_permutation(n: int, pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    perm = np.arange(n, dtype=np.int64)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


MIRROR: np.ndarray = _mirror_permutation(NUM_CLASSES, MIRROR_PAIRS)
"""MIRROR[k] is the id of class k seen in a horizontally flipped image."""

MIRROR_LUT: np.ndarray = np.arange(256, dtype=np.uint8)
"""MIRROR as a 256-entry uint8 table (cv2.LUT / tensor indexing); ids >= 25 map to themselves."""
MIRROR_LUT[:NUM_CLASSES] = MIRROR

# Colours chosen so that mirror pairs are related hues and neighbours contrast (RGB, uint8).
PALETTE: np.ndarray = np.array([
    [0, 0, 0], [230, 159, 0], [255, 200, 80], [180, 100, 40], [220, 140, 90],
    [120, 60, 160], [170, 110, 210], [210, 170, 240], [0, 130, 110], [80, 200, 170],
    [240, 60, 60], [0, 90, 200], [90, 170, 255], [110, 60, 20], [170, 120, 70],
    [200, 200, 0], [250, 250, 120], [150, 0, 60], [255, 90, 150], [200, 40, 110],
    [130, 130, 130], [60, 40, 20], [40, 90, 40], [0, 220, 255], [250, 120, 0],
], dtype=np.uint8)

# FaceSynthetics (microsoft/FaceSynthetics) 19 classes; 255 marks ignored pixels.
FS19_CLASSES: tuple[str, ...] = (
    "BACKGROUND", "SKIN", "NOSE", "RIGHT_EYE", "LEFT_EYE", "RIGHT_BROW", "LEFT_BROW", "RIGHT_EAR",
    "LEFT_EAR", "MOUTH_INTERIOR", "TOP_LIP", "BOTTOM_LIP", "NECK", "HAIR", "BEARD", "CLOTHING",
    "GLASSES", "HEADWEAR", "FACEWEAR",
)
FS19_IGNORE = IGNORE_INDEX

_FS19_NAME_TO_25 = {
    "BACKGROUND": "background", "NOSE": "nose", "RIGHT_EYE": "right_eye", "LEFT_EYE": "left_eye",
    "RIGHT_BROW": "right_brow", "LEFT_BROW": "left_brow", "RIGHT_EAR": "right_ear",
    "LEFT_EAR": "left_ear",
    "MOUTH_INTERIOR": "mouth", "TOP_LIP": "upper_lip", "BOTTOM_LIP": "lower_lip", "NECK": "neck",
    "HAIR": "hair", "CLOTHING": "clothing", "GLASSES": "glasses", "HEADWEAR": "headwear",
}

FS19_TO_25: np.ndarray = np.full(256, -1, dtype=np.int16)
"""Lookup table 19-class id -> 25-class id; -1 where no single id exists (SKIN splits into the
nine skin sub-regions, BEARD and FACEWEAR have no 25-class id, 255 is ignore)."""
for _i, _n in enumerate(FS19_CLASSES):
    if _n in _FS19_NAME_TO_25:
        FS19_TO_25[_i] = CLASSES.index(_FS19_NAME_TO_25[_n])

L25_TO_FS19: np.ndarray = np.zeros(NUM_CLASSES, dtype=np.uint8)
"""Lookup table 25-class id -> 19-class id (the nine skin sub-regions collapse to SKIN)."""
for _i, _n in enumerate(FS19_CLASSES):
    if FS19_TO_25[_i] >= 0:
        L25_TO_FS19[FS19_TO_25[_i]] = _i
L25_TO_FS19[list(SKIN_IDS)] = FS19_CLASSES.index("SKIN")

_NAME_TO_ID = {n: i for i, n in enumerate(CLASSES)}
_NAME_TO_ID.update({n.replace("brow", "blow"): i
                    for n, i in _NAME_TO_ID.items() if "brow" in n})  # seed typo
_NAME_TO_ID["headware"] = _NAME_TO_ID["headwear"]  # seed typo


def class_id(name: str | int, what: str = "class") -> int:
    """Id of a class given by name (case-insensitive) or int id; FSEError naming ``what`` otherwise.

    A string is a name, never an id: ``"10"`` is refused (``10`` or ``"nose"``), as are bools and
    floats.
    """
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        if not 0 <= int(name) < NUM_CLASSES:
            raise FSEError(f"{what}: class id {name} outside 0..{NUM_CLASSES - 1}")
        return int(name)
    if not isinstance(name, str):
        raise FSEError(f"{what}: {name!r} is not a class name or int id")
    key = name.strip().lower()
    if key.lstrip("+-").isdigit():
        n = int(key)
        hint = (f"the class name ({CLASSES[n]!r}) or, in Python, the int id ({n})"
                if 0 <= n < NUM_CLASSES else "a class name")
        raise FSEError(f"{what}: {name!r} is a string of digits, not a class: give {hint}")
    if key not in _NAME_TO_ID:
        raise FSEError(f"{what}: unknown face class {name!r}; known classes: {', '.join(CLASSES)}")
    return _NAME_TO_ID[key]


def class_ids(names: Iterable[str | int], what: str = "classes") -> list[int]:
    """Ids for names and/or int ids, order kept; unknown or duplicate classes refused naming
    ``what``."""
    ids = [class_id(n, what) for n in names]
    twice = [i for k, i in enumerate(ids) if i in ids[:k]]
    if twice:
        raise FSEError(f"{what}: class {CLASSES[twice[0]]!r} given twice")
    return ids


def class_name(cid: int) -> str:
    return CLASSES[class_id(cid)]


def colorize(mask: np.ndarray, palette: np.ndarray = PALETTE) -> np.ndarray:
    """HxW label map -> HxWx3 uint8 RGB picture."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"colorize expects an HxW label map, got shape {mask.shape}")
    if mask.size and int(mask.max()) >= len(palette):
        raise ValueError(f"label {int(mask.max())} has no colour (palette has {len(palette)})")
    return palette[mask]


def flip_mask(mask: np.ndarray) -> np.ndarray:
    """Horizontal flip of an HxW (or ...xHxW) label map that keeps the anatomy right: pixels move
    and left/right ids swap; ids outside the 25 classes (255 'ignore') stay as they are."""
    mask = np.asarray(mask)
    # the cache's masks: cv2, an order of magnitude faster
    if mask.dtype == np.uint8 and mask.ndim == 2:
        return cv2.LUT(cv2.flip(mask, 1), MIRROR_LUT)
    return np.ascontiguousarray(MIRROR_LUT.astype(mask.dtype)[mask][..., ::-1])


def parse_class_list(spec: Any, name: str = "classes", *, allow_empty: bool = False) -> list[int]:
    """The one rule for a list of classes, wherever one is given (config keys, CLI flags, the API).

    ``spec``: a list or tuple of class names and/or int ids, or one string of comma-separated names
    (``"nose, mouth"``); None means all 25. Strings are names, never ids (``"10"`` is refused with a
    hint naming ``"nose"`` and ``10``). Unknown or duplicate classes, and an empty list unless
    ``allow_empty``, are refused with an FSEError naming ``name`` (a flag or config key).

    Example::

        >>> (parse_class_list("nose, mouth"), parse_class_list(["hair", 0]),
        ...  parse_class_list(None)[:3])
        ([10, 17], [21, 0], [0, 1, 2])
    """
    if spec is None:
        return list(range(NUM_CLASSES))
    if isinstance(spec, str):
        items = [t.strip() for t in spec.split(",")]
        if any(not t for t in items) and spec.strip():
            raise FSEError(f"{name}: empty name in {spec!r}; "
                           "separate class names with single commas")
        items = [t for t in items if t]
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        raise FSEError(f"{name}: must be a list of class names or int ids, "
                       "e.g. ['nose', 'mouth'] or [10, 17], "
                       f"or a 'nose,mouth' string; got {type(spec).__name__} {spec!r}")
    ids = class_ids(items, name)
    if not ids and not allow_empty:
        raise FSEError(f"{name}: the list of classes is empty")
    return ids
