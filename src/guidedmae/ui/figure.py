"""The page's pictures: one side of a comparison, and the previews of an upload.

The panels are the training pictures' (pictures.output_rows: per output the input, the scores, the masked
input, the prediction and the prediction pasted into the visible patches), laid out for a page: text large
enough to read, no sample numbers, and the legends a reader needs: a colour bar for the scores (each map
scaled to its own min..max), one per one-channel modality such as depth (each map scaled to its input's
2nd..98th percentile), and the colours of the semseg classes shown, named where the checkpoint's data
names them.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import cast

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from guidedmae.data.modalities import DERIVED_TARGETS, Modality, get_modality
from guidedmae.masking.strategy import MaskChoice
from guidedmae.pictures import (
    COLUMNS,
    SCORE_COLOURS,
    VALUE_COLOURS,
    class_picture,
    colormap,
    output_rows,
    panel_image,
    sample_panels,
)

__all__ = ["PANEL", "input_picture", "side_figure"]

PANEL = 96  # pixels per panel side: two figures of four rows of five panels fit a 1440x900 screen at 1:1
GAP, LABEL, LINE = 6, 84, 21  # between panels; the row labels' column; one line of the legend
BAR = 150  # a colour bar's length
CLASSES, SWATCH = 62, 24  # where the class swatches start; a swatch and its gaps, without its name
# The font matplotlib ships: the same letters on every machine, at sizes one reads without zooming.
_FONT_FILE = str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")
TEXT, NOTE = ImageFont.truetype(_FONT_FILE, 15), ImageFont.truetype(_FONT_FILE, 13)

# A legend line: a colour bar (title, colour map, low end, high end, note) or a row of class swatches.
Bar = tuple[str, str, str, str, str]


def _wrapped(draw: ImageDraw.ImageDraw, text: str, width: int, font: ImageFont.FreeTypeFont) -> list[str]:
    """`text` broken into lines no wider than `width` pixels (a longer word keeps a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def _legend(
    draw: ImageDraw.ImageDraw, width: int, bars: list[Bar], classes: Mapping[int, str]
) -> list[Bar | list[int]]:
    """The legend's lines: the colour bars, then the classes as swatches, as many per line as fit."""
    lines: list[Bar | list[int]] = list(bars)
    swatches: list[int] = []  # the line being filled
    used: float = width  # forces a first line of swatches
    for class_id, name in classes.items():
        needed = SWATCH + draw.textlength(name, font=NOTE)
        if used + needed > width:
            swatches = []
            lines.append(swatches)
            used = CLASSES
        swatches.append(class_id)
        used += needed
    return lines


def _draw_legend(
    canvas: Image.Image, top: int, lines: list[Bar | list[int]], classes: Mapping[int, str]
) -> None:
    draw = ImageDraw.Draw(canvas)
    for index, line in enumerate(lines):
        y = top + index * LINE
        if isinstance(line, tuple):
            title, colours, low, high, note = line
            draw.text((4, y + 2), title, fill="black", font=NOTE)
            x = max(LABEL, 12 + int(draw.textlength(title, font=NOTE)))
            draw.text((x, y + 2), low, fill="black", font=NOTE)
            x += int(draw.textlength(low, font=NOTE)) + 4
            bar = colormap(np.linspace(0, 1, BAR)[None].repeat(12, axis=0), colours)
            canvas.paste(Image.fromarray((bar * 255).astype(np.uint8)), (x, y + 5))
            x += BAR + 4
            draw.text((x, y + 2), high, fill="black", font=NOTE)
            x += int(draw.textlength(high, font=NOTE)) + 10
            draw.text((x, y + 2), note, fill="#444444", font=NOTE)
            continue
        if index == 0 or isinstance(lines[index - 1], tuple):
            draw.text((4, y + 2), "classes", fill="black", font=NOTE)
        x = CLASSES
        for class_id in line:
            colour = tuple(int(255 * c) for c in class_picture(torch.tensor([class_id]))[0])
            draw.rectangle((x, y + 5, x + 12, y + 17), fill=colour, outline="black")
            draw.text((x + 15, y + 2), classes[class_id], fill="black", font=NOTE)
            x += SWATCH + int(draw.textlength(classes[class_id], font=NOTE))


def _classes_shown(
    batch: dict[str, torch.Tensor], preds: dict[str, torch.Tensor], names: list[str], class_names: list[str]
) -> dict[int, str]:
    """{class id: its name} of the classes drawn in the class-map rows (inputs and predictions)."""
    ids: set[int] = set()
    for name in names:
        ids.update(preds[name][0].argmax(dim=0).unique().tolist())
        if name in batch:
            ids.update(batch[name][0].unique().tolist())
    return {
        class_id: class_names[class_id] if class_id < len(class_names) else f"class {class_id}"
        for class_id in sorted(ids)
    }


def side_figure(
    batch: dict[str, torch.Tensor],
    choice: MaskChoice,
    preds: dict[str, torch.Tensor],
    patch_size: int,
    score_label: str,
    modalities: Mapping[str, Modality],
    class_names: list[str],
) -> Image.Image:
    """The picture of one strategy on one image (batch of one): a row per output, the five columns, then
    the legend. class_names: the semseg classes' names by id ([] where the checkpoint has none)."""
    rows = output_rows(batch, choice, preds, 0, patch_size, modalities)
    row_height = max(PANEL * preds[name].shape[-2] // preds[name].shape[-1] for name, _, _ in rows)
    width = LABEL + len(COLUMNS) * (PANEL + GAP)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    titles = [_wrapped(measure, title, PANEL - 4, TEXT) for title in (COLUMNS[0], score_label, *COLUMNS[2:])]
    header = 6 + 19 * max(len(lines) for lines in titles)
    kinds = {name: get_modality(name, modalities) for name, _, _ in rows}
    bars: list[Bar] = []
    if any(panels[1] is not None for _, _, panels in rows):
        bars.append((score_label, SCORE_COLOURS, "low", "high", "each map scaled to its range"))
    for name, given, _ in rows:
        if (
            given
            and kinds[name].channels == 1
            and not kinds[name].is_class_map
            and name not in DERIVED_TARGETS
        ):
            ends = ("near", "far") if name == "depth" else ("low", "high")
            bars.append((name, VALUE_COLOURS, *ends, "2nd..98th percentile of the input"))
    class_rows = [name for name, _, _ in rows if kinds[name].is_class_map]
    classes = _classes_shown(batch, preds, class_rows, class_names)
    legend = _legend(measure, width, bars, classes)
    height = header + len(rows) * (row_height + GAP) + GAP + len(legend) * LINE + 4
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for column, lines in enumerate(titles):
        for line_number, line in enumerate(lines):
            draw.text(
                (LABEL + column * (PANEL + GAP) + 2, 3 + 19 * line_number), line, fill="black", font=TEXT
            )
    top = header
    for name, given, panels in rows:
        notes = (["(mean, std", "of input)"] if name in DERIVED_TARGETS else []) + (
            [] if given else ["(not", "given)"]
        )
        draw.text((4, top + row_height // 2 - 10 - 8 * len(notes)), name, fill="black", font=TEXT)
        for number, note in enumerate(notes):
            draw.text(
                (4, top + row_height // 2 + 8 + 16 * number - 8 * len(notes)), note, fill="#444444", font=NOTE
            )
        for column, panel in enumerate(panels):
            if panel is not None:
                canvas.paste(panel_image(panel, PANEL), (LABEL + column * (PANEL + GAP), top))
        top += row_height + GAP
    _draw_legend(canvas, top + GAP, legend, classes)
    return canvas


def input_picture(name: str, value: torch.Tensor, modality: Modality, size: int = PANEL) -> Image.Image:
    """A model-ready input (no batch dimension) as the pictures draw it: rgb as colours, depth in the
    colour map of its 2nd..98th percentile, class ids in their colours; `size` pixels wide."""
    shown = sample_panels(name, value, value, None, None, 1, modality)[0]  # given a target: never None
    return panel_image(cast(np.ndarray, shown), size)
