"""What a pretrained encoder knows about the synthetic scenes: ridge probes on its frozen rgb features.

    python benchmarks/frozen_features.py random runs/demo/checkpoint-last.pt runs/other/checkpoint-last.pt

For each encoder (`random` = the demo architecture with random weights) the last block's tokens of
held-out scenes are fitted by ridge regression, in closed form, to two targets: every patch's majority
semantic class (floor, wall, the five shapes, ...) and every image's shape label (mean-pooled tokens).
Prints a markdown table; docs/results/2026-11-30-synthetic-pretraining.md quotes it. A probe
that barely beats the random encoder means pretraining has not learned that target.
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from guidedmae.config import FinetuneConfig, load_config
from guidedmae.data.scenes import FIRST_SHAPE_CLASS, NUM_SEMSEG_CLASSES, SHAPES
from guidedmae.engine.finetune_setup import build_model, evaluation_set
from guidedmae.models.pretrained import load_pretrained

# The demo encoder, rgb input, full-resolution semseg; found from the script, so it runs from any folder.
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "finetune" / "synthetic_semseg.yaml"


def frozen_features(encoder, scene_seed: int, count: int, config_overrides: list[str]):
    """Last-block patch tokens [count * N, D] with their majority classes, pooled tokens and labels."""
    config = load_config(
        FinetuneConfig,
        CONFIG,
        [*config_overrides, f"data.eval_scene_seed={scene_seed}", f"data.eval_num_samples={count}"],
    )
    scenes = evaluation_set(config)
    patch = config.model.patch_size
    tokens, classes, pooled, labels = [], [], [], []
    with torch.no_grad():
        for index in range(count):
            sample = scenes[index]
            embedded = encoder.tokenize({"rgb": sample["rgb"][None]})
            encoded = encoder.encode_layers(embedded.embeddings, [len(encoder.encoder) - 1])[0][0]
            rows, cols = embedded.grid
            per_patch = sample["semseg"].reshape(rows, patch, cols, patch).permute(0, 2, 1, 3).flatten(2)
            tokens.append(encoded[: rows * cols].numpy())  # the global token comes last
            classes.append(torch.mode(per_patch.flatten(0, 1), dim=1).values.numpy())
            pooled.append(encoded.mean(dim=0).numpy())
            labels.append(int(sample["label"]))
    return np.concatenate(tokens), np.concatenate(classes), np.stack(pooled), np.array(labels)


def ridge_predictions(train_x, train_y, test_x, num_classes: int, strength: float = 10.0) -> np.ndarray:
    """Closed-form ridge regression onto one-hot targets (standardized features), argmax on test_x."""
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    train_x = np.c_[(train_x - mean) / std, np.ones(len(train_x))]
    test_x = np.c_[(test_x - mean) / std, np.ones(len(test_x))]
    gram = train_x.T @ train_x + strength * np.eye(train_x.shape[1])
    weights = np.linalg.solve(gram, train_x.T @ np.eye(num_classes)[train_y])
    return np.argmax(test_x @ weights, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "encoders", nargs="+", help="'random' or pretraining checkpoints of the demo architecture"
    )
    parser.add_argument(
        "--train-scenes", type=int, default=1024, help="scenes 0.. of series 0 fit the probes"
    )
    parser.add_argument("--test-scenes", type=int, default=512, help="scenes 0.. of series 1 score them")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(
        "| encoder | patch accuracy | mean per-class patch accuracy | shape-patch accuracy | image label accuracy |"
    )
    print("|---|---|---|---|---|")
    for name in args.encoders:
        overrides = [] if name == "random" else [f"model.init={name}"]
        torch.manual_seed(0)
        encoder = build_model(load_config(FinetuneConfig, CONFIG, overrides)).encoder
        if name != "random":
            load_pretrained(encoder, name)
        encoder.eval()
        train = frozen_features(encoder, 0, args.train_scenes, overrides)
        test = frozen_features(encoder, 1, args.test_scenes, overrides)
        predicted = ridge_predictions(train[0], train[1], test[0], NUM_SEMSEG_CLASSES)
        truth = test[1]
        per_class = [
            np.mean(predicted[truth == c] == c) for c in range(NUM_SEMSEG_CLASSES) if np.any(truth == c)
        ]
        shapes = truth >= FIRST_SHAPE_CLASS
        label_predicted = ridge_predictions(train[2], train[3], test[2], len(SHAPES))
        print(
            f"| {name} | {100 * np.mean(predicted == truth):.1f} | {100 * np.mean(per_class):.1f} "
            f"| {100 * np.mean(predicted[shapes] == truth[shapes]):.1f} "
            f"| {100 * np.mean(label_predicted == test[3]):.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
