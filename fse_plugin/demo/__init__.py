"""``fse demo``: the whole plugin on synthetic faces in minutes, with a report (see ``run``);
``sizes`` is light, for the command line. Each name loads its module on first use."""
from fse_plugin.common.lazy import lazy_exports

lazy_exports(__name__, {
    ".run": ["run_demo"],
    ".sizes": ["FULL", "QUICK", "DemoSizes"],
})
