"""FSErasing: erase random face-semantic regions of normalised training faces, torchvision-style.

``FSErasing(p, n_erase, classes, present_only, fill)`` is the transform: ``get_params`` draws which
classes each image loses, ``erasing.erase`` (the functional form, one image or a batch) replaces
their pixels. Masks are 25-class label maps (``labels``) as arrays, tensors or ``MaskRuns`` (the
mask cache's runs, of which only the chosen classes' runs are expanded); a flipped image's unflipped
map can be read mirrored. Erasing works in the normalised [-1, 1] space, after
ToTensor + Normalize(0.5, 0.5), as the reference does, so N(0, 1) fills have the image's scale. All
randomness comes from a ``torch.Generator`` (or torch's default one, which arcface_torch seeds per
DataLoader worker).

Modules: ``fills`` (what replaces the pixels, one function per fill), ``engines`` (numpy on CPU,
torch elsewhere), ``functional`` (``erase``), ``transform`` (``FSErasing``, ``flip_pair``). The
settings' rules live in ``fseconfig`` (``FSEConfig``, ``FILLS``, ``check_fill``).
"""
from fse_plugin.erasing.functional import erase
from fse_plugin.erasing.transform import FSErasing, flip_pair
from fse_plugin.fseconfig import FILLS, check_fill
from fse_plugin.maskruns import MaskRuns

__all__ = ["FILLS", "FSErasing", "MaskRuns", "check_fill", "erase", "flip_pair"]
