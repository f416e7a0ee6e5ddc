"""The helper layer every concern shares: one home each for image normalisation, device and
distributed setup, autocast, the learning-rate schedule, mask files, user-facing errors, the rules
for values a user gives (``checks``) and atomic result files (``files``).

Nothing here imports another ``fse_plugin`` module, so any module may use it.
"""
from fse_plugin.common.errors import FSEError
from fse_plugin.common.images import NORM_LUT, to_input, to_uint8
from fse_plugin.common.maskfiles import load_masks, masks_path_for
from fse_plugin.common.runtime import PRECISIONS, dist_env, mixed_precision, model_device, resolve_device, \
    resolve_precision, unwrapped_key
from fse_plugin.common.schedule import warmup_cosine

__all__ = ["FSEError", "NORM_LUT", "to_input", "to_uint8", "load_masks", "masks_path_for", "dist_env",
           "PRECISIONS", "mixed_precision", "model_device", "resolve_device", "resolve_precision", "unwrapped_key",
           "warmup_cosine"]
