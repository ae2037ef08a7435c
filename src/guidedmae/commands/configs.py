"""`guidedmae configs [pretrain|finetune|study]`, `guidedmae configs show NAME`: the configs shipped in the
package, one line each, and the YAML of one to copy and edit. Every command that takes a config takes
such a name as well as a path (a file wins over a name).

    guidedmae configs                         # every shipped config, by kind
    guidedmae configs study                   # the studies
    guidedmae configs show demo > mine.yaml   # a copy to edit: guidedmae pretrain mine.yaml
"""

import argparse

from guidedmae.config.presets import CONFIG_KINDS, close_names, list_configs, shipped_config

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    if args.what == "show":
        if not args.name:
            raise ValueError("guidedmae configs show NAME: give the name of a shipped config")
        path = shipped_config(args.name)
        if path is None:
            close = close_names(args.name)
            hint = f"close: {', '.join(close)}" if close else "`guidedmae configs` lists them"
            raise ValueError(f"no shipped config named {args.name!r} ({hint})")
        print(path.read_text(), end="")
        return 0
    if args.name:
        raise ValueError(f"guidedmae configs {args.what} takes no name; to print a config: configs show NAME")
    for kind in [args.what] if args.what else CONFIG_KINDS:
        configs = list_configs(kind)
        width = max(map(len, configs))
        print(f"{kind} ({len(configs)}):")
        for name, description in configs.items():
            print(f"  {name:<{width}}  {description}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `configs`."""
    parser = subparsers.add_parser(
        "configs", help="the configs shipped in the package, by name; the YAML of one (configs show NAME)"
    )
    parser.add_argument("what", nargs="?", choices=(*CONFIG_KINDS, "show"), help="a kind to list, or show")
    parser.add_argument("name", nargs="?", help="with show: the config to print")
    parser.set_defaults(func=_run)
