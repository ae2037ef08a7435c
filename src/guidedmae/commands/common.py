"""What several commands share: the help of key=value overrides, and a scores table."""

__all__ = ["OVERRIDES_HELP", "print_scores"]

OVERRIDES_HELP = "dotted key=value overrides of the config, e.g. optim.blr=2e-4 data.batch_size=64"


def print_scores(scores: dict) -> None:
    """A fine-tuned model's metrics as a markdown table, and the per-class IoU table if any."""
    print("| metric | value |\n|---|---:|")
    for name, value in scores["metrics"].items():
        print(f"| {name} | {value:.4g} |")
    if "iou_table" in scores:
        print("\nper-class IoU:\n" + scores["iou_table"])
