"""``fse study``: evidence for FSErasing with intervals, K seeds x variants on one synthetic set.

Each file one concern: ``data`` (synthetic set, parser with a quality floor, mask cache; shared with
the demo), ``recognizer`` (the built-in training loop, counted in steps; shared with the demo),
``arcface`` (the same runs with upstream train_v2.py), ``variants`` (off, fse, random_erasing ...),
``probes`` (clean, erased regions, rendered occluders), ``statistics`` (t-intervals, paired
tests), ``verdict`` (sentences that follow the numbers; shared with the demo), ``results``
(aggregation over seeds), ``report`` (study.json, tables, plots, report.md) and ``run``.
The package exports what the CLI and the tests use; the rest is imported from its module.
"""
from fse_plugin.study.run import DEFAULT, QUICK, StudySizes, run_study
from fse_plugin.study.statistics import mean_ci, paired_difference, sign_flip_p
from fse_plugin.study.variants import DEFAULT_VARIANTS, parse_variants

__all__ = ["DEFAULT", "QUICK", "StudySizes", "run_study", "mean_ci", "paired_difference", "sign_flip_p",
           "DEFAULT_VARIANTS", "parse_variants"]
