"""The ``fse`` grammar: ``fse COMMAND [ACTION] --flags``, one spelling per flag, old spellings
hidden.

Every command module calls ``command`` to declare a leaf (its flags and the function that runs it)
and ``renamed`` for a flag spelled differently in an earlier release; both keep working with a
deprecation note on stderr, and neither shows in ``--help``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields, replace
from typing import Any, Callable, TypeVar

from fse_plugin.common.precision import PRECISIONS

__all__ = ["Parser", "command", "renamed", "group", "fill_value", "size_flags", "sizes_from",
           "precision_flag", "pack_flag"]

Runner = Callable[[argparse.Namespace], "int | None"]


class _HelpWithDefaults(argparse.HelpFormatter):
    """Every flag's help ends with its default, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, argparse.SUPPRESS) or action.nargs == 0
                or not action.option_strings):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """argparse with the plugin's error contract: a bad command line is one line on stderr,
    ``fse <command>: error: <what>``, and exit status 2 (argparse alone prints the usage first).

    A command's flags are added when that command is parsed or its help shown (``defer``), so that
    ``fse rec pack`` builds (and imports) what ``rec pack`` needs, not every command's flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpWithDefaults)
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        """Call ``add(self)`` (which adds flags) when this parser is first used."""
        self._deferred.append(add)

    def complete(self) -> Parser:
        """Add the deferred flags now, here and in every command below (for tools that read the
        whole grammar)."""
        self._add_deferred()
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for p in action.choices.values():
                    p.complete()
        return self

    def _add_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    # argparse's entry, also of a subcommand
    def parse_known_args(self, args=None, namespace=None):  # noqa: D102
        self._add_deferred()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:  # noqa: D102
        self._add_deferred()
        return super().format_help()

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
Sizes = TypeVar("Sizes")


def _deprecated(run: Runner, old: str, new: str) -> Runner:
    def wrapper(args: argparse.Namespace) -> int | None:
        print(f"fse: '{old}' is deprecated; use '{new}'", file=sys.stderr)
        return run(args)
    return wrapper


def command(sub: argparse._SubParsersAction, name: str, help: str,
            add_args: Callable[[argparse.ArgumentParser], None], run: Runner,
            prog: str | None = None, old_names: tuple[str, ...] = (),
            old_sub: Any = None) -> argparse.ArgumentParser:
    """Declare ``fse ... NAME``: a parser with ``add_args``'s flags and ``--debug``, run by
    ``run(args)``.

    ``old_names`` are earlier spellings of the same command, registered hidden in ``old_sub`` (the
    top-level subparsers, for commands that moved under a group); they run the same code.
    """
    p = sub.add_parser(name, help=help, description=help)
    _leaf(p, add_args, run, prog or p.prog)
    for old in old_names:
        q = (old_sub or sub).add_parser(old,
                                        description=f"deprecated spelling of '{prog or p.prog}'")
        _leaf(q, add_args, _deprecated(run, f"fse {old}", prog or p.prog), prog or p.prog)
    return p


def _leaf(p: Parser, add_args: Callable[[argparse.ArgumentParser], None], run: Runner, prog: str
          ) -> None:
    def add(parser: argparse.ArgumentParser) -> None:
        add_args(parser)
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="show the full traceback of an error (also FSE_DEBUG=1)")

    p.defer(add)
    p.set_defaults(run=run, prog=prog, cli_parser=p)


def group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """``fse NAME ACTION``: a command whose actions are subcommands
    (``fse cache build|info|verify``)."""
    p = sub.add_parser(name, help=help, description=help)
    return p.add_subparsers(dest=f"{name}_action", metavar="ACTION", required=True)


class _Renamed(argparse.Action):
    """An old flag spelling: stores into the new flag's destination, with a note on stderr."""

    def __init__(self, option_strings: list[str], dest: str, new: argparse.Action,
                 **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated; use {self.new.option_strings[0]}",
              file=sys.stderr)
        if self.nargs == 0:
            values = (True if isinstance(self.new, argparse.BooleanOptionalAction)
                      else self.new.const)
        if isinstance(self.new, argparse._AppendAction):
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, values)


def renamed(p: argparse.ArgumentParser | argparse._ArgumentGroup, old: str, new: argparse.Action
            ) -> None:
    """Accept ``old`` as a hidden, deprecated spelling of the flag ``new`` (the Action add_argument
    returned)."""
    zero = new.nargs == 0
    p.add_argument(old, dest=new.dest, action=_Renamed, new=new, nargs=0 if zero else new.nargs,
                   type=None if zero else new.type, choices=new.choices, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)


def fill_value(text: str) -> str | float:
    """A ``--fill`` flag: a number (a constant in normalised [-1, 1] space) or a fill mode name."""
    try:
        return float(text)
    except ValueError:
        return text


def size_flags(g: argparse._ArgumentGroup, preset: Any, label: str = "default") -> None:
    """One ``--field-name`` flag per field of a sizes dataclass (``fse demo``, ``fse study``),
    helped by the field's ``metadata['help']``; unset flags are None, so ``sizes_from`` keeps the
    chosen preset's value."""
    for f in fields(preset):
        value = getattr(preset, f.name)
        g.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=None,
                       help=f"{f.metadata['help']} ({label} {value})")


def sizes_from(args: argparse.Namespace, preset: Sizes) -> Sizes:
    """``preset`` with the size flags the user gave."""
    given = {f.name: getattr(args, f.name) for f in fields(preset)
             if getattr(args, f.name) is not None}
    return replace(preset, **given)


class _DeprecatedValue(argparse.Action):
    """An old switch that now stands for one value of a newer flag (``--amp`` ->
    ``--precision bf16``)."""

    def __init__(self, option_strings: list[str], dest: str, value: Any, new: str,
                 **kwargs: Any) -> None:
        self.value, self.new = value, new
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated; use {self.new} {self.value}",
              file=sys.stderr)
        setattr(namespace, self.dest, self.value)


def precision_flag(p: argparse.ArgumentParser | argparse._ArgumentGroup,
                   amp_meant: str | None = None, old_switches: tuple[str, ...] = ("--amp",),
                   default: str = "fp32") -> argparse.Action:
    """``--precision {fp32,fp16,bf16}`` (autocast dtype; ``common.runtime.mixed_precision``), and
    ``auto`` (``resolve_precision``: bf16 on CUDA, fp32 elsewhere) where that is the default. With
    ``amp_meant``, the command's earlier switches (``--amp``, ``--fp16``) still work, hidden and
    deprecated, meaning that precision (``--no-amp``: fp32)."""
    auto = ("auto",) if default == "auto" else ()
    new = p.add_argument("--precision", choices=(*auto, *PRECISIONS), default=default,
                         help=f"{'auto (bf16 on CUDA, fp32 on CPU), ' if auto else ''}fp32, or "
                              f"autocast to fp16 / bf16 (on CUDA; bf16 also on CPU)")
    if amp_meant is not None:
        for old in old_switches:
            p.add_argument(old, dest=new.dest, action=_DeprecatedValue, value=amp_meant,
                           new="--precision", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            p.add_argument(f"--no-{old[2:]}", dest=new.dest, action=_DeprecatedValue, value="fp32",
                           new="--precision", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return new


def pack_flag(p: argparse.ArgumentParser | argparse._ArgumentGroup, help: str, **kwargs: Any
              ) -> argparse.Action:
    """``--pack PATH`` (a verification .bin), with ``--bin``, its earlier spelling, hidden and
    deprecated."""
    new = p.add_argument("--pack", help=help, **kwargs)
    renamed(p, "--bin", new)
    return new
