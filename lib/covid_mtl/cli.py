"""``covid-mtl`` command line: one sub-command per module in ``covid_mtl.commands``.

Each command module exposes ``register(subparsers)`` that adds its parser and sets ``func``; the
function returns an exit code. Bad input surfaces as a one-line error, not a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import CovidMTLError
from .io.checks import max_image_mb_from_env, set_max_image_mb

COMMAND_MODULES = ("sample_data", "prepare_data", "train", "evaluate", "experiment", "analyze")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="covid-mtl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"covid_mtl.commands.{name}")
        except ModuleNotFoundError as exc:  # a command not written yet must not break the others
            if exc.name != f"covid_mtl.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_max_image_mb(max_image_mb_from_env())  # the one read of the environment, at start-up
    try:
        return int(args.func(args) or 0)
    except CovidMTLError as exc:
        print(f"covid-mtl {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
