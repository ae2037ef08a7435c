"""The `guidedmae` command: one sub-command per job, wiring only.

Every error a user can cause (a bad config, file or checkpoint, a run that cannot go on) ends the command
with its message on stderr and exit status 1 (argparse's 2 for usage errors); `--debug`, or the
environment variable GUIDEDMAE_DEBUG=1, shows the traceback instead.
"""

import argparse
import os
import sys

from guidedmae.commands import (
    bench,
    configs,
    data,
    evaluate,
    export,
    finetune,
    pretrain,
    pseudolabel,
    report,
    schedule,
    study,
    ui,
    visualize,
)
from guidedmae.engine.fit import NonFiniteLossError
from guidedmae.infra.distributed import LauncherGone
from guidedmae.infra.version import package_version

__all__ = ["main"]

# Each sub-command module exposes add_parser(subparsers), which registers its parsers and sets `func`.
SUBCOMMANDS = (
    pretrain,
    finetune,
    evaluate,
    schedule,
    study,
    report,
    visualize,
    bench,
    export,
    data,
    pseudolabel,
    ui,
    configs,
)
EXAMPLES = """examples:
    make demo                                              # pretrain on the synthetic scenes, then report
    guidedmae pretrain demo resume=auto                    # a shipped config by name (or a YAML path)
    guidedmae finetune synthetic_cls model.init=runs/demo/checkpoint-last.pt
    guidedmae study reference_cpu --dry-run
    guidedmae configs                                      # every shipped config, one line each
    guidedmae SUBCOMMAND --help                            # every sub-command's options and examples"""
# What a user's input or a failing run raises; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, NonFiniteLossError, LauncherGone)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes positional overrides only before the first flag; key=value words after flags are
    # overrides too (`evaluate CKPT --split val eval.mode=sliding`).
    if (
        extra
        and hasattr(args, "overrides")
        and all("=" in word and not word.startswith("-") for word in extra)
    ):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except KeyboardInterrupt as interrupt:  # its message, if any, names the file whose writing it stopped
        message = str(interrupt) or "interrupted; what was written stays as it was"
        print(f"guidedmae {args.command}: {message}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output stopped (`guidedmae study ... --dry-run | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except USER_ERRORS as error:
        if args.debug or os.environ.get("GUIDEDMAE_DEBUG") == "1":
            raise
        print(f"guidedmae {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """The `guidedmae` parser; every sub-command's help ends with the examples of its module docstring."""
    parser = argparse.ArgumentParser(
        prog="guidedmae",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        known = set(subparsers.choices)
        module.add_parser(subparsers)
        for name in set(subparsers.choices) - known:
            _add_examples(subparsers.choices[name], module.__doc__ or "", name)
    return parser


def _add_examples(parser: argparse.ArgumentParser, docstring: str, command: str) -> None:
    """The command's examples after its options, and its own sub-commands' (`data synth`) after theirs."""
    parser.epilog = "examples:\n" + _examples(docstring, command)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                _add_examples(subparser, docstring, f"{command} {name}")


def _examples(docstring: str, command: str) -> str:
    """The example lines of a command module's docstring (`guidedmae COMMAND ...`, `torchrun ... -m
    guidedmae COMMAND ...`), indented."""
    lines = [line.strip() for line in docstring.splitlines()]
    return "\n".join(
        "    " + line
        for line in lines
        if line.startswith(("guidedmae ", "torchrun ")) and f"guidedmae {command} " in line + " "
    )


def _one_line(error: BaseException) -> str:
    """The error's message on one line. An error raised in a DataLoader worker arrives as
    "Caught ValueError in DataLoader worker process 0. Original Traceback ...": its last line is ours."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        lines = [lines[-1].split(": ", 1)[-1]]
    return " ".join(lines) or type(error).__name__
