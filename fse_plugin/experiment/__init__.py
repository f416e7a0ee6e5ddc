"""Small, repeatable experiments on synthetic faces: the parts ``fse demo`` and ``fse study`` share.

Each file one concern: ``inputs`` (synthetic faces, a parser held to a quality floor, the mask
cache), ``recognizer`` (the built-in ArcFace training loop, counted in steps), ``statistics``
(t-intervals, paired tests, the effect a number of seeds can detect), ``verdict`` (sentences that
follow the numbers), ``pictures`` (labelled face grids, figures written whole) and ``clock``
(seconds per stage).
"""
from fse_plugin.experiment.clock import StageClock, machine, warn_if_busy
from fse_plugin.experiment.inputs import (PARSER_FLOOR, SyntheticSet, build_mask_cache,
                                          parser_warning, read_pack, synthesise, train_parser, warn)
from fse_plugin.experiment.pictures import labelled_grid, present_classes, pyplot, save_figure
from fse_plugin.experiment.recognizer import (ArcMarginHead, RecognizerSettings,
                                              load_recognizer_weights, train_recognizer)
from fse_plugin.experiment.statistics import (Interval, PairedDifference, detectable_effect,
                                              mean_ci, paired_difference, seeds_needed, sign_flip_p)
from fse_plugin.experiment.verdict import OUTCOMES, Estimate, Verdict, judge, verdict

__all__ = ["StageClock", "machine", "warn_if_busy",
           "PARSER_FLOOR", "SyntheticSet", "build_mask_cache", "parser_warning", "read_pack",
           "synthesise", "train_parser", "warn",
           "labelled_grid", "present_classes", "pyplot", "save_figure",
           "ArcMarginHead", "RecognizerSettings", "load_recognizer_weights", "train_recognizer",
           "Interval", "PairedDifference", "detectable_effect", "mean_ci", "paired_difference",
           "seeds_needed", "sign_flip_p",
           "OUTCOMES", "Estimate", "Verdict", "judge", "verdict"]
