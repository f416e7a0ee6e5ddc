"""What the semantic-occlusion benchmark erases: face regions (single classes and groups of them)
and the fill.

Apart from the benchmark, so that ``fse eval occlusion`` and ``config.fse_eval`` check them before
torch loads.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from fse_plugin import labels
from fse_plugin.common import FSEError, checks
from fse_plugin.fseconfig import FILLS

__all__ = ["DEFAULT_GROUPS", "occlusion_fill", "occlusion_regions", "parse_groups"]

DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "eyes+brows": ("right_eye", "left_eye", "right_brow", "left_brow"),
    "upper_face": ("right_forehead", "left_forehead", "middle_forehead", "around_right_eye",
                   "around_left_eye", "right_eye", "left_eye", "right_brow", "left_brow"),
    "lower_face": ("right_cheek", "left_cheek", "right_chin", "left_chin", "nose", "mouth",
                   "upper_lip", "lower_lip"),
}
"""Region groups of the occlusion benchmark: eyes and brows (what sunglasses hide), the upper face
above the nose, and the lower face a medical mask covers."""


def parse_groups(spec: str | Mapping[str, Sequence[str | int] | str] | None) -> dict[str, list[int]]:
    """Region groups: None -> ``DEFAULT_GROUPS``; "" or "none" -> no group; "name=cls,cls;name2=cls"
    or a mapping name -> classes (names or ids) otherwise."""
    if spec is None:
        spec = DEFAULT_GROUPS
    if not isinstance(spec, (str, Mapping)):
        raise FSEError("groups: expected 'name=class,class;...' or a dict name -> classes, got "
                       f"{spec!r}")
    if isinstance(spec, str):
        if spec.strip().lower() in ("", "none"):
            return {}
        items = {}
        for part in (p.strip() for p in spec.split(";")):
            if not part:
                continue
            name, sep, classes = part.partition("=")
            if not sep or not name.strip() or not classes.strip():
                raise FSEError(f"group {part!r}: expected name=class,class (groups are separated "
                               "by ';')")
            if name.strip() in items:
                raise FSEError(f"group {name.strip()!r} given twice")
            items[name.strip()] = classes
        spec = items
    return {name: labels.parse_class_list(classes if isinstance(classes, str) else list(classes))
            for name, classes in spec.items()}


def occlusion_fill(fill: Any, name: str = "fill") -> str | float:
    """A fill of the benchmark: a mode of ``fseconfig.FILLS`` or a constant in the normalised
    [-1, 1] space."""
    if isinstance(fill, str):
        return checks.choice(fill, name, FILLS)
    return checks.number(fill, name, -1.0, 1.0)


def occlusion_regions(classes: str | Sequence[str | int] | None = None,
                      groups: str | Mapping[str, Any] | None = None) -> list[tuple[str, list[int]]]:
    """(region name, class ids): each class of ``classes`` (default all 25) alone, then each
    group."""
    regions = [(labels.class_name(c), [c]) for c in labels.parse_class_list(classes)]
    taken = {r for r, _ in regions}
    for name, ids in parse_groups(groups).items():
        if name in taken:
            raise FSEError(f"group name {name!r} is also a class name")
        regions.append((name, ids))
    return regions
