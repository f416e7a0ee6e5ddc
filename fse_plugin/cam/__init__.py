"""FS-CAM: region-level explanations of face recognition models, for embedding models too.

FS-CAM asks, for each of the 25 face-parsing regions, how much of the model's score survives when
only that region is kept (everything else 0 in normalised space). The score is a *target*: the
softmax probability of a class (the reference; for arcface_torch checkpoints the identity logits of
their classifier head) or the cosine similarity of the embedding to a reference embedding (the
other image of a verification pair, the image's own clean embedding, or an identity centroid).

The same targets drive region ablation, the pixel CAMs of pytorch-grad-cam, and RISE and Group-CAM
(ours: the library lacks them). Every pixel map is aggregated per region; dataset-level statistics
give each region's mean importance with a 95% interval, for one model or two side by side.

Modules, in the order data flows:

- ``inputs``: faces as model inputs, masks checked, batched forwards
- ``targets``: ``Target``, ``ClassTarget``, ``EmbeddingTarget``, pair / self / identity targets
- ``classifier``: ``IdentityLogits`` (backbone + the checkpoint's ArcFace head), which target runs
- ``regions``: ``fs_cam`` and ``region_ablation``
- ``rise``, ``group_cam``: ``RISE`` and ``GroupCAM`` (a pytorch-grad-cam ``BaseCAM``)
- ``names``: the method and target names, a model's label (light: the command line checks them)
- ``pixel``: every pixel CAM by name, aggregated per region; ``methods``: all methods by name
- ``stats``: per-region means and intervals (``RegionStats``), two models compared
- ``results``: what ``explain`` returns (``Explanation``: ``MethodResult`` per model and method)
- ``settings``: ``ExplainSettings``, how ``explain`` runs and writes
- ``plots``, ``report``: pictures, CSV/JSON and the report page
- ``sources``: pack pairs or rec images with their masks (``load_pack``, ``load_rec``)
- ``explain``: all of the above into files (``explain``, ``explain_pairs``, ``explain_bin``,
  ``explain_rec``)
- ``evaluated_pairs``: FS-CAM of the pairs an evaluation protocol scored (``fse eval ... --fscam``,
  eval_ijbc.py); ``callback``: ``FSCAMCallback`` (arcface_torch training hook)

Each name loads its module on first use (``GroupCAM`` imports pytorch-grad-cam: seconds).
"""
from fse_plugin.common.lazy import lazy_exports

lazy_exports(__name__, {
    ".callback": ["FSCAMCallback"],
    ".classifier": ["ARCFACE_SCALE", "IdentityLogits", "TargetChoice", "choose_target",
                    "explained_model"],
    ".sources": ["PackPairs", "RecImages", "load_pack", "load_rec"],
    ".evaluated_pairs": ["fscam_ijb", "fscam_pack", "ijb_fscam_rows"],
    ".settings": ["ExplainSettings"],
    ".explain": ["explain", "explain_bin", "explain_pairs", "explain_rec"],
    ".results": ["Explanation", "MethodResult", "MethodStats", "RegionValues"],
    ".inputs": ["IGNORE", "as_input", "as_masks", "batched_forward"],
    ".names": ["METHODS", "parse_methods", "GRADIENT_METHODS", "PIXEL_METHODS", "REGION_METHODS"],
    ".methods": ["run_method"],
    ".pixel": ["aggregate_per_region", "default_target_layer", "make_pixel_cam", "pixel_cam",
               "resolve_layer", "run_pixel_cam"],
    ".plots": ["overlay", "overlay_grid_figure", "overlay_strip", "plot_overlay_grid",
               "plot_region_bars"],
    ".regions": ["fs_cam", "normalise_scores", "paint", "region_ablation"],
    ".rise": ["RISE"],
    ".group_cam": ["GroupCAM"],
    ".stats": ["RegionStats", "compare_stats", "region_mean", "region_stats"],
    ".targets": ["TARGETS", "ClassTarget", "EmbeddingTarget", "Target", "identity_target",
                 "pair_target", "resolve_target", "self_target"],
})
