"""`guidedmae finetune CONFIG [key=value ...]`: fine-tune, linear-probe or k-NN-probe an encoder (also under torchrun).

guidedmae finetune synthetic_cls model.init=runs/demo/checkpoint-last.pt
"""

import argparse

from guidedmae.commands.common import OVERRIDES_HELP, print_scores
from guidedmae.config import FinetuneConfig, load_config
from guidedmae.engine.finetune import finetune
from guidedmae.infra.distributed import launched_rank

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    result = finetune(load_config(FinetuneConfig, args.config, args.overrides))
    if launched_rank() == 0:
        print_scores(result.scores)
        checkpoint = (
            f"  checkpoint: {result.checkpoint}\n" if result.steps else ""
        )  # the k-NN probe trains nothing
        print(
            f"\ndone: {result.steps} steps\n{checkpoint}  metrics:    {result.metrics}\n  results:    {result.results}"
        )
    return 0 if result.weights_identical else 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `finetune`."""
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune or linear-probe a pretrained encoder (also under torchrun)",
        description="Fine-tune a MultiMAE encoder with a classification, semseg or depth head. "
        "model.init=PATH starts from our or an official pretraining checkpoint; "
        "model.freeze_encoder=true makes it a linear probe; resume=auto continues the run in out_dir.",
    )
    parser.add_argument(
        "config",
        help="a YAML file, or a shipped config's name (guidedmae configs finetune), e.g. synthetic_cls",
    )
    parser.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    parser.set_defaults(func=_run)
