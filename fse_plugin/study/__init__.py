"""``fse study``: evidence for FSErasing with intervals, K seeds x variants on one rec and one pack.

Each file one concern: ``settings`` (what a study is asked to do, checked whole before any work),
``variants`` (off, fse, random_erasing ...), ``probes`` (clean, erased regions, rendered occluders:
per-pair distances and the metrics from them), ``builtin`` and ``arcface`` (the two trainers),
``results`` (aggregation over seeds), ``sensitivity`` (what the study can see: the spread of each
difference, its parts from the test pairs and from training, the effect its seeds detect),
``pictures``, ``report`` (study.json, tables, plots, report.md) and ``run``. The parts shared with
the demo (inputs, training loop, statistics, verdicts) are ``fse_plugin.experiment``; ``presets``
(sizes, defaults, names) is light, for the command line. Each name loads its module on first use.
"""
from fse_plugin.common.lazy import lazy_exports

lazy_exports(__name__, {
    ".arcface": ["ArcfaceSettings"],
    ".presets": ["DEFAULT", "DEFAULT_VARIANTS", "PROBES", "QUICK", "StudySizes"],
    ".run": ["Inputs", "prepare_inputs", "run_study"],
    ".settings": ["OwnData", "StudySettings"],
    ".variants": ["parse_variants"],
})
