"""`guidedmae pretrain CONFIG [key=value ...]`: pretrain a MultiMAE (also under torchrun).

guidedmae pretrain demo resume=auto
torchrun --nproc_per_node 4 -m guidedmae pretrain attn_high
"""

import argparse

from guidedmae.commands.common import OVERRIDES_HELP
from guidedmae.config import PretrainConfig, load_config
from guidedmae.engine.fit import fit
from guidedmae.engine.pretrain import PICTURES, PretrainJob
from guidedmae.infra.distributed import launched_rank
from guidedmae.infra.run_log import TENSORBOARD

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    result = fit(PretrainJob(load_config(PretrainConfig, args.config, args.overrides)))
    if launched_rank() == 0:
        print(
            f"done: {result.steps} steps\n"
            f"  checkpoint:  {result.checkpoint}\n"
            f"  metrics:     {result.metrics}\n"
            f"  tensorboard: {result.out_dir / TENSORBOARD}   (tensorboard --logdir {result.out_dir / TENSORBOARD})\n"
            f"  pictures:    {result.out_dir / PICTURES}"
        )
    return 0 if result.weights_identical else 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `pretrain`."""
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain a MultiMAE (also under torchrun --nproc_per_node N -m guidedmae pretrain ...)",
        description="Pretrain a MultiMAE from a YAML config. resume=auto continues the newest checkpoint "
        "in out_dir; model.init=PATH starts from official or own weights.",
    )
    parser.add_argument(
        "config", help="a YAML file, or a shipped config's name (guidedmae configs pretrain), e.g. demo"
    )
    parser.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    parser.set_defaults(func=_run)
