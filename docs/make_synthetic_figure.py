"""Draw a few synthetic scenes (rgb, depth, semseg) into docs/synthetic_samples.png.

python docs/make_synthetic_figure.py [--out docs/synthetic_samples.png] [--n 6] [--size 128] [--seed 0]
"""

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from guidedmae.data.scenes import NUM_SEMSEG_CLASSES, SEMSEG_CLASSES, SHAPES, render_scene  # noqa: E402

CLASS_COLOURS = ListedColormap(plt.get_cmap("tab10").colors[:NUM_SEMSEG_CLASSES])


def draw(out: Path, n: int, size: int, seed: int) -> None:
    scenes = [render_scene(seed, index, size) for index in range(n)]
    figure, axes = plt.subplots(3, n, figsize=(2 * n, 7.2), squeeze=False)
    for column, scene in enumerate(scenes):
        rgb, depth, semseg = axes[:, column]
        rgb.imshow(scene.rgb)
        rgb.set_title(f"#{column}: {SHAPES[scene.label]}", fontsize=10)
        depth.imshow(scene.depth, cmap="magma_r")
        depth.set_title(f"{scene.depth.min():.1f}-{scene.depth.max():.1f} m (near = light)", fontsize=8)
        semseg.imshow(
            scene.semseg, cmap=CLASS_COLOURS, vmin=0, vmax=NUM_SEMSEG_CLASSES - 1, interpolation="nearest"
        )
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    for axis, name in zip(axes[:, 0], ("rgb", "depth", "semseg")):
        axis.set_ylabel(name, fontsize=11)
    legend = [Patch(color=CLASS_COLOURS(i), label=name) for i, name in enumerate(SEMSEG_CLASSES)]
    figure.legend(handles=legend, loc="lower center", ncol=NUM_SEMSEG_CLASSES, fontsize=9, frameon=False)
    figure.suptitle(f"guidedmae synthetic scenes (seed {seed}, {size}x{size})", fontsize=12)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    # Written next to the target, then renamed: a half-written PNG never replaces a good one.
    temp = out.with_name(f".{out.name}.tmp")
    figure.savefig(temp, dpi=100, format="png")
    plt.close(figure)
    os.replace(temp, out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "synthetic_samples.png")
    parser.add_argument("--n", type=int, default=6, help="number of scenes (default 6)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    args = parser.parse_args()
    draw(args.out, args.n, args.size, args.seed)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
