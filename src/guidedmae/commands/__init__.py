"""The sub-commands of `guidedmae`, one thin module each: its argparse parser (add_parser) and a few
lines that call the library and print. Each module's docstring gives its examples, which the
command's --help shows.

Layer: the top; may import any package. No library module imports these.
"""

__all__ = [
    "bench",
    "common",
    "configs",
    "data",
    "evaluate",
    "export",
    "finetune",
    "pretrain",
    "pseudolabel",
    "report",
    "schedule",
    "study",
    "visualize",
]
