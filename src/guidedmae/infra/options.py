"""Command-line options from a settings dataclass, so that a command and a script share one definition.

    @dataclass
    class Settings:
        batch_size: int = field(default=8, metadata={"help": "samples per step"})
    add_options(parser, Settings)                 # --batch-size N (default 8)
    settings = settings_from(args, Settings)      # the dataclass, its own checks run

A field's metadata may give "help", "choices" and "type" (for a default of None); the flag is the field's
name with '-' for '_'.
"""

import argparse
from dataclasses import fields
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["add_options", "settings_from"]

Settings = TypeVar("Settings", bound="DataclassInstance")


def add_options(parser: argparse.ArgumentParser, settings: "type[DataclassInstance]") -> None:
    """One `--name` option per field of the dataclass `settings`, typed by its default."""
    for field in fields(settings):
        default = field.default_factory() if callable(field.default_factory) else field.default
        help_text = field.metadata.get("help", "")
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=field.metadata.get("type", type(default)),
            default=default,
            choices=field.metadata.get("choices"),
            help=f"{help_text} (default {default})" if default not in ("", None) else help_text,
        )


def settings_from(args: argparse.Namespace, settings: type[Settings]) -> Settings:
    """The dataclass `settings` from the parsed options that add_options made for it."""
    return settings(**{field.name: getattr(args, field.name) for field in fields(settings)})
