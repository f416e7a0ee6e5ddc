"""``fse study``: evidence for FSErasing with intervals, K seeds x variants on one rec and one pack.

Each file one concern: ``settings`` (what a study is asked to do, checked whole before any work),
``variants`` (off, fse, random_erasing ...), ``probes`` (clean, erased regions, rendered occluders:
per-pair distances and the metrics from them), ``builtin`` and ``arcface`` (the two trainers),
``results`` (aggregation over seeds), ``sensitivity`` (what the study can see: the spread of each
difference, its parts from the test pairs and from training, the effect its seeds detect),
``pictures``, ``report`` (study.json, tables, plots, report.md) and ``run``. The parts shared with
the demo (inputs, training loop, statistics, verdicts) are ``fse_plugin.experiment``.
"""
from fse_plugin.study.arcface import ArcfaceSettings
from fse_plugin.study.probes import PROBES
from fse_plugin.study.run import Inputs, prepare_inputs, run_study
from fse_plugin.study.settings import DEFAULT, QUICK, OwnData, StudySettings, StudySizes
from fse_plugin.study.variants import DEFAULT_VARIANTS, parse_variants

__all__ = ["ArcfaceSettings", "PROBES", "Inputs", "prepare_inputs", "run_study", "DEFAULT", "QUICK", "OwnData",
           "StudySettings", "StudySizes", "DEFAULT_VARIANTS", "parse_variants"]
