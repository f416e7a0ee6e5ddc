"""Face verification evaluation as arcface_torch computes it - ``.bin`` packs and IJB-B/C 1:1, the
same numbers on the same embeddings - plus a semantic-occlusion benchmark.

One concern per module:

* ``safepickle`` - unpickling an untrusted pack with what it may build and the memory it may take
  bounded;
* ``packs`` - reading ``.bin`` packs, choosing pairs; ``masks`` - the parsing masks of evaluated
  images;
* ``embed`` - image + flip embeddings, ``EmbedSettings`` (how every protocol runs a model over
  images);
* ``verification`` - the ``.bin`` protocol (Accuracy-Flip, XNorm, VAL@FAR);
* ``ijb`` - IJB meta files, template features, TAR@FAR, ROC;
* ``regions`` - what the occlusion benchmark erases (classes, groups, fill); ``occlusion`` - erasing
  them in the probes, the benchmark; ``occlusion_report`` - its table, CSV, JSON, chart;
* ``config`` - arcface_torch configs; ``fse_eval`` - its ``config.fse_eval``; ``protocols`` - IJB's
  FAR points, the default packs; ``tables`` - text tables; ``errors`` - PackError, MetaError.

Each name loads its module on first use.
"""
from fse_plugin.common.lazy import lazy_exports

lazy_exports(__name__, {
    ".config": ["config_file", "config_weights", "load_config"],
    ".embed": ["EmbedSettings", "embed", "fuse_views"],
    ".errors": ["MetaError", "PackError"],
    ".protocols": ["IJB_FARS", "PACK_NAMES"],
    ".ijb": ["IJBFaces", "IJBMeta", "IJBResult", "evaluate_ijb", "pair_scores", "read_ijb_meta",
             "roc_colours", "template_features"],
    ".masks": ["CacheMasks", "open_masks", "predict_ijb_masks", "stack_masks"],
    ".regions": ["DEFAULT_GROUPS", "occlusion_fill", "occlusion_regions", "parse_groups"],
    ".occlusion": ["OcclusionSettings", "RegionErasing", "occlusion_ijb", "occlusion_pack"],
    ".occlusion_report": ["OcclusionReport", "write_occlusion_report"],
    ".packs": ["load_bin", "pack_pairs", "select_pairs"],
    ".tables": ["format_table"],
    ".verification": ["VerificationResult", "evaluate_embeddings", "evaluate_pack", "far_threshold",
                      "val_at_far"],
})
