"""Face parser: FSErasing's U-Net with a ResNet-18 encoder, its checkpoints, data, training and scores.

- ``model``: :class:`UNetRes18` (module names of the published ``UNet_res18``, so its checkpoint loads);
- ``checkpoint``: :func:`load_parser` (ours, the published state_dict, common wrappers; weights only)
  and :func:`save_parser`;
- ``predict``: :func:`predict_masks`, the batched inference that labels recognition data;
- ``facesynthetics``: read a FaceSynthetics-layout folder, align it to ArcFace 112x112 once, cache it;
- ``augment``: flips that swap left/right ids, small affines, colour jitter;
- ``metrics``: per-class F1 and IoU, on arrays or a checkpoint's held-out split (:class:`EvalSettings`);
- ``training_data``: :class:`ParsingDataset` (augmented faces and labels) and the loss's :func:`class_weights`;
- ``budget``: how long a training run trains (step budget, schedule, clock);
- ``train``: :func:`train_parser` with :class:`TrainSettings`, budgeted in steps (CPU, CUDA, torchrun DDP).
"""
from fse_plugin.labels import IGNORE_INDEX
from fse_plugin.parsing.augment import ParserAugment, affine_pair, color_jitter
from fse_plugin.parsing.checkpoint import ParserCheckpointError, load_parser, save_parser
from fse_plugin.parsing.facesynthetics import (AlignedSet, label_dir, load_frame, prepare_dataset, read_anno_list,
                                               split_indices)
from fse_plugin.parsing.metrics import (EvalSettings, ParserEvaluation, ParserMetrics, confusion_matrix,
                                        evaluate_checkpoint, evaluate_parser)
from fse_plugin.parsing.model import (DEFAULT_FEATURE_SCALE, FEATURE_SCALES, DoubleConv, UNetRes18, UpBlock,
                                      parser_widths)
from fse_plugin.parsing.predict import forward_throughput, masks_from_checkpoint, predict_masks
from fse_plugin.parsing.train import TrainingResult, TrainSettings, train_parser
from fse_plugin.parsing.training_data import ParsingDataset, class_weights

__all__ = ["IGNORE_INDEX", "DEFAULT_FEATURE_SCALE", "FEATURE_SCALES", "DoubleConv", "UpBlock", "UNetRes18",
           "parser_widths", "ParserCheckpointError", "load_parser", "save_parser", "predict_masks",
           "masks_from_checkpoint", "forward_throughput", "AlignedSet", "label_dir", "load_frame", "prepare_dataset",
           "read_anno_list", "split_indices", "ParserAugment", "affine_pair", "color_jitter", "ParsingDataset",
           "class_weights", "ParserMetrics", "EvalSettings", "ParserEvaluation", "confusion_matrix",
           "evaluate_parser", "evaluate_checkpoint", "TrainSettings", "TrainingResult", "train_parser"]
