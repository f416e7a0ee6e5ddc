"""``fse demo``: the whole plugin on synthetic faces in minutes, with a report (see ``run``)."""
from fse_plugin.demo.run import FULL, QUICK, DemoSizes, run_demo

__all__ = ["FULL", "QUICK", "DemoSizes", "run_demo"]
