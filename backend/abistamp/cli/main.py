"""The `abistamp` command line: build an ABI matrix into a wheelhouse, stamp, inspect, check,
configure uv. See docs/cli.md.

Exit codes: 0 success; 1 a mismatch (`check`) or a failed variant (`build`); 2 a usage or input
error (the message says which and how to fix it); 130 interrupted.

Each command is one module of this package (its options, description and handler), named in
:data:`COMMANDS` and imported only when that command runs, so `abistamp check` starts in
milliseconds. A command module provides `DESCRIPTION`, `EPILOG`, `add_arguments(parser)` and
`run(args) -> int`. The build backend never imports this package.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Collection, Sequence
from types import ModuleType
from typing import Any

from abistamp import __version__
from abistamp.core.errors import AbistampError

from .common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

DESCRIPTION = ("Build, stamp, inspect and check torch extension wheels by the torch ABI they "
               "were built for.")

EPILOG = """\
examples:
  abistamp build examples/tiny-ext --torch torch==2.13.0 --torch torch==2.14.1 -o wheelhouse
  abistamp build deepspeed==0.19.8 --torch torch==2.13.0 --env DS_BUILD_CPU_ADAM=1 -o wh
  abistamp stamp dist/foo-1.0-cp311-cp311-linux_x86_64.whl --python .venv -o stamped/
  abistamp inspect wheelhouse/pt213cpu/*.whl
  abistamp repair wheelhouse/pt213cpu/*.whl -o dist/
  abistamp check --python .venv/bin/python
  abistamp uv-config wheelhouse --extra cpu=pt213cpu --extra cu130=pt214cu130
  abistamp matrix --format github --github-output
  abistamp index artifacts/wheelhouse-* -o public

exit codes: 0 ok; 1 a mismatch (check) or a failed variant (build); 2 usage or input error;
130 interrupted. Documentation: docs/cli.md.
"""


@dataclasses.dataclass(frozen=True)
class CommandInfo:
    module: str  # imported only when the command runs (or its --help is asked for)
    summary: str  # its line in `abistamp --help`


COMMANDS: dict[str, CommandInfo] = {
    "build": CommandInfo(
        "abistamp.cli.build",
        "build one source for several torch variants into a per-ABI wheelhouse"),
    "stamp": CommandInfo(
        "abistamp.cli.stamp",
        "stamp wheels built elsewhere with the ABI of an environment's torch"),
    "repair": CommandInfo(
        "abistamp.cli.repair",
        "give wheels a manylinux tag, leaving torch's libraries to torch"),
    "inspect": CommandInfo(
        "abistamp.cli.inspect", "show the ABI record, stamps and torch pins of wheels"),
    "check": CommandInfo(
        "abistamp.cli.check", "compare what is installed in an environment with its torch"),
    "uv-config": CommandInfo(
        "abistamp.cli.uvconfig",
        "print the uv configuration that routes extras to a wheelhouse's ABIs"),
    "index": CommandInfo(
        "abistamp.cli.index",
        "merge wheelhouses built on different machines into one indexed wheelhouse"),
    "matrix": CommandInfo(
        "abistamp.cli.matrix",
        "print the cells of [tool.abistamp.matrix] as JSON for a CI matrix"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit code is 2 too; one line
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (fix: see `{self.prog} --help`)\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30, width=100)


def command_module(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name].module)


def build_parser(load: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The parser; every command is listed, but only those in `load` (default: all) have their
    module imported and their options defined."""
    parser = _Parser(prog="abistamp", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=_formatter)
    parser.add_argument("--version", action="version", version=f"abistamp {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands", parser_class=_Parser)
    for name, info in COMMANDS.items():
        p = sub.add_parser(name, formatter_class=_formatter, help=info.summary)
        if load is None or name in load:
            module = command_module(name)
            p.description, p.epilog = module.DESCRIPTION, module.EPILOG
            module.add_arguments(p)
            p.set_defaults(func=module.run)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    # The top-level parser has no option that takes a value: its first word is the command.
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(load=[c for c in [_command_in(args_list)] if c in COMMANDS])
    args = parser.parse_args(args_list)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.func(args)
        return code
    except AbistampError as e:
        print(f"abistamp: error: {e.one_line()}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("abistamp: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
