"""``python -m fse_plugin.im2rec``: mxnet 1.9.1's ``python -m mxnet.tools.im2rec`` command line,
without mxnet.

    python -m fse_plugin.im2rec --list --recursive train ROOT       # -> train.lst
    python -m fse_plugin.im2rec --num-thread 16 --quality 100 train ROOT   # -> train.rec, train.idx

Runs ``fse rec list`` (with ``--list``) or ``fse rec pack``; errors read
``fse rec ...: error: ...``.
"""
import sys

from fse_plugin.cli import main
from fse_plugin.cli.rec import im2rec_argv

if __name__ == "__main__":
    sys.exit(main(im2rec_argv(sys.argv[1:])))
