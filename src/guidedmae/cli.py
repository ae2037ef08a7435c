"""The `guidedmae` command: one sub-command per job, wiring only."""

import argparse

from guidedmae import bench, report, visualize
from guidedmae.data import cli as data_cli
from guidedmae.engine import cli as engine_cli
from guidedmae.engine import finetune_cli

# Each sub-command module exposes add_parser(subparsers), which registers its parser and sets `func`.
SUBCOMMANDS = (engine_cli, finetune_cli, data_cli, report, bench, visualize)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guidedmae", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)
