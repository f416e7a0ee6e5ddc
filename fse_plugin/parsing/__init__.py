"""Face parser: FSErasing's U-Net with a ResNet-18 encoder, its checkpoints, data,
training and scores.

- ``model``: :class:`UNetRes18` (module names of the published ``UNet_res18``, so its checkpoint
  loads); ``widths``: the feature scales it may have;
- ``checkpoint``: :func:`load_parser` (ours, the published state_dict, common wrappers; weights
  only) and :func:`save_parser`;
- ``predict``: :func:`predict_masks`, the batched inference that labels recognition data;
- ``facesynthetics``: read a FaceSynthetics-layout folder, align it to ArcFace 112x112 once,
  cache it;
- ``augment``: flips that swap left/right ids, small affines, colour jitter;
- ``metrics``: per-class F1 and IoU, on arrays or a checkpoint's held-out split
  (:class:`EvalSettings`);
- ``training_data``: :class:`ParsingDataset` (augmented faces and labels) and the loss's
  :func:`class_weights`;
- ``budget``: how long a training run trains (step budget, schedule, clock);
- ``train``: :func:`train_parser` with :class:`TrainSettings`, budgeted in steps
  (CPU, CUDA, torchrun DDP).

Each name loads its module on first use.
"""
from fse_plugin.common.lazy import lazy_exports

lazy_exports(__name__, {
    "fse_plugin.labels": ["IGNORE_INDEX"],
    ".widths": ["DEFAULT_FEATURE_SCALE", "FEATURE_SCALES", "parser_widths"],
    ".model": ["DoubleConv", "UpBlock", "UNetRes18"],
    ".checkpoint": ["ParserCheckpointError", "load_parser", "save_parser"],
    ".predict": ["predict_masks", "masks_from_checkpoint", "forward_throughput"],
    ".facesynthetics": ["AlignedSet", "label_dir", "load_frame", "prepare_dataset",
                        "read_anno_list", "split_indices"],
    ".augment": ["ParserAugment", "affine_pair", "color_jitter"],
    ".training_data": ["ParsingDataset", "class_weights"],
    ".metrics": ["ParserMetrics", "EvalSettings", "ParserEvaluation", "confusion_matrix",
                 "evaluate_parser", "evaluate_checkpoint"],
    ".train": ["TrainSettings", "TrainingResult", "train_parser"],
})
