"""The helper layer every concern shares: one home each for image normalisation, device and
distributed setup, autocast, the learning-rate schedule, mask files, user-facing errors, the rules
for values a user gives (``checks``) and atomic result files (``files``).

Nothing here imports another ``fse_plugin`` module, so any module may use it. Its names load their
module on first use (``lazy``): ``FSEError`` or ``checks`` alone do not import torch.
"""
from fse_plugin.common.lazy import lazy_exports

lazy_exports(__name__, {
    ".errors": ["FSEError"],
    ".images": ["NORM_LUT", "to_input", "to_uint8"],
    ".maskfiles": ["load_masks", "masks_path_for"],
    ".precision": ["PRECISIONS"],
    ".runtime": ["dist_env", "mixed_precision", "model_device", "resolve_device",
                 "resolve_precision", "unwrapped_key"],
    ".schedule": ["warmup_cosine"],
})
