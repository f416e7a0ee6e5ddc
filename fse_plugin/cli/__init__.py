"""The ``fse`` command line: ``main`` parses and runs; one module per command, each a thin layer
that turns flags into plain arguments of the library's functions."""
from fse_plugin.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
