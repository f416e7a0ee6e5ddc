"""Recognition backbones: the small built-in one (tests, demo) and the user's own, with their
checkpoints.

``tiny.py`` is the built-in network; ``networks.py`` maps a network name to the built-in one or to
arcface_torch's ``backbones.get_model`` in the user's tree (and finds that tree); ``checkpoints.py``
reads checkpoints as releases come and returns the backbone and, when the checkpoint holds one, the
classifier head.
"""
from fse_plugin.backbone.checkpoints import (CheckpointError, load_backbone, load_recognizer,
                                             read_checkpoint)
from fse_plugin.backbone.networks import arcface_torch_dir, build_network
from fse_plugin.backbone.tiny import IResNetTiny, iresnet_tiny

__all__ = ["CheckpointError", "load_backbone", "load_recognizer", "read_checkpoint",
           "arcface_torch_dir", "build_network", "IResNetTiny", "iresnet_tiny"]
