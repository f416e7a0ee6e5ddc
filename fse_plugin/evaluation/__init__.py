"""Face verification evaluation as arcface_torch computes it - ``.bin`` packs and IJB-B/C 1:1, the same numbers
on the same embeddings - plus a semantic-occlusion benchmark.

One concern per module:

* ``safepickle`` - unpickling an untrusted pack with what it may build and the memory it may take bounded;
* ``packs`` - reading ``.bin`` packs, choosing pairs; ``masks`` - the parsing masks of evaluated images;
* ``embed`` - image + flip embeddings, ``EmbedSettings`` (how every protocol runs a model over images);
* ``verification`` - the ``.bin`` protocol (Accuracy-Flip, XNorm, VAL@FAR);
* ``ijb`` - IJB meta files, template features, TAR@FAR, ROC;
* ``occlusion`` - erasing regions in the probes, the benchmark; ``occlusion_report`` - its table, CSV, JSON, chart;
* ``config`` - arcface_torch configs; ``tables`` - text tables; ``errors`` - PackError, MetaError.
"""
from fse_plugin.evaluation.config import config_file, config_weights, load_config
from fse_plugin.evaluation.embed import EmbedSettings, embed, fuse_views
from fse_plugin.evaluation.errors import MetaError, PackError
from fse_plugin.evaluation.ijb import IJB_FARS, IJBFaces, IJBMeta, IJBResult, evaluate_ijb, pair_scores, read_ijb_meta
from fse_plugin.evaluation.ijb import roc_colours, template_features
from fse_plugin.evaluation.masks import CacheMasks, open_masks, predict_ijb_masks, stack_masks
from fse_plugin.evaluation.occlusion import (DEFAULT_GROUPS, OcclusionSettings, RegionErasing, occlusion_fill,
                                             occlusion_ijb, occlusion_pack, occlusion_regions, parse_groups)
from fse_plugin.evaluation.occlusion_report import OcclusionReport, write_occlusion_report
from fse_plugin.evaluation.packs import load_bin, pack_pairs, select_pairs
from fse_plugin.evaluation.tables import format_table
from fse_plugin.evaluation.verification import (PACK_NAMES, VerificationResult, evaluate_embeddings, evaluate_pack,
                                                far_threshold, val_at_far)

__all__ = [
    "config_file", "config_weights", "load_config",
    "EmbedSettings", "embed", "fuse_views",
    "MetaError", "PackError",
    "IJB_FARS", "IJBFaces", "IJBMeta", "IJBResult", "evaluate_ijb", "pair_scores", "read_ijb_meta", "roc_colours",
    "template_features",
    "CacheMasks", "open_masks", "predict_ijb_masks", "stack_masks",
    "DEFAULT_GROUPS", "OcclusionSettings", "RegionErasing", "occlusion_fill", "occlusion_ijb", "occlusion_pack",
    "occlusion_regions", "parse_groups",
    "OcclusionReport", "write_occlusion_report",
    "load_bin", "pack_pairs", "select_pairs",
    "format_table",
    "PACK_NAMES", "VerificationResult", "evaluate_embeddings", "evaluate_pack", "far_threshold", "val_at_far",
]
