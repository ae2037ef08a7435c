"""The `guidedmae ui` page's controls, without Gradio: what they hold in, the page's outputs out.

`respond` turns what the controls hold (as the browser or the HTTP API sends them: numbers may come as
None or text) into the comparison's pictures and table, `respond_across` into the table over many scenes;
a value or file that does not fit is a message naming the control. `take_upload` reads a dropped file
once, checks it and removes the server's copy; `budget_setting` is what the visible-tokens slider offers
for the modalities given. `ui.app` lays the controls out and serves the page.
"""

import contextlib
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from guidedmae.ui.demo import Budget, Comparison, Demo, StrategyChoice
from guidedmae.ui.scenes import SceneTable, across_scenes
from guidedmae.ui.uploads import Upload, read_upload

__all__ = [
    "DIRICHLET",
    "FIXED",
    "SCENE",
    "UPLOAD",
    "BudgetSetting",
    "PageRequest",
    "PageResult",
    "budget_setting",
    "given_modalities",
    "respond",
    "respond_across",
    "take_upload",
]

SCENE, UPLOAD = "held-out scene", "upload"
DIRICHLET, FIXED = "Dirichlet draw", "fixed counts"


@dataclass
class PageRequest:
    """What the controls hold, as the page (or a client of its HTTP API) sends them: unchecked."""

    source: object  # SCENE or UPLOAD
    scene: object  # the scene number
    uploads: Mapping[str, Upload]  # {model input: the file given for it} (the page's session keeps them)
    pseudo_label: object  # fill in the inputs an upload lacks with the pseudo-label models
    num_visible: object  # visible tokens over the given modalities (Dirichlet draw)
    budget: object  # DIRICHLET or FIXED
    alphas: object  # "1" or "1, 0.5, 2"
    counts: tuple  # fixed counts: visible tokens of each model input (those given are read)
    seed: object
    left: object  # a row of Demo.strategies
    left_options: object  # "noise=0.25 heads=2"
    right: object
    right_options: object


@dataclass
class PageResult:
    """What the page shows; on bad input only the message."""

    left: Image.Image | None = None
    right: Image.Image | None = None
    left_caption: str = ""  # the side and its strategy: "left: attention-high"
    right_caption: str = ""
    summary: str = ""  # markdown: the image, a table of the two sides, the premise, the time
    message: str = ""


def _whole(value: object, control: str) -> int:
    """A whole number from a control's value (a number, or its text through the HTTP API)."""
    try:
        number = (
            float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
        )
    except ValueError:
        number = None
    if number is None or not number.is_integer():
        raise ValueError(f"{control} {value!r}; expected a whole number")
    return int(number)


def _text(value: object, control: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{control} {value!r}; expected text")
    return value


def _choice(value: object, control: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{control} {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def _alphas(text: str) -> tuple[float, ...]:
    words = [word for word in re.split(r"[,\s]+", text.strip()) if word]
    try:
        return tuple(float(word) for word in words) or (1.0,)
    except ValueError:
        raise ValueError(
            f"Dirichlet alphas {text!r}; expected numbers separated by commas, e.g. 1, 0.5, 2"
        ) from None


def given_modalities(demo: Demo, source: str, uploads: Mapping[str, Upload]) -> list[str]:
    """The model inputs an image of `source` holds, in the model's order."""
    inputs = demo.model.config.inputs
    return list(inputs) if source == SCENE else [name for name in inputs if name in uploads]


@dataclass
class BudgetSetting:
    maximum: int  # the tokens of the given modalities
    value: int  # the visible tokens that keep the checkpoint's masked share
    label: str  # the slider's title: what it counts


def budget_setting(demo: Demo, given: list[str]) -> BudgetSetting:
    """The visible-tokens slider for the given modalities: their tokens, and the checkpoint's masked share."""
    tokens = demo.tokens_per_modality * max(len(given), 1)
    value = demo.default_visible(max(len(given), 1))
    listed = ", ".join(given) or "none given"
    return BudgetSetting(
        tokens,
        value,
        f"visible tokens of the {tokens} of {listed} (default {value}: the run's {1 - value / tokens:.0%} masked)",
    )


def _budget(demo: Demo, request: PageRequest, given: list[str]) -> Budget:
    fixed = _choice(request.budget, "split among the modalities", (DIRICHLET, FIXED)) == FIXED
    inputs = demo.model.config.inputs
    counts = tuple(
        _whole(count, f"{name} visible tokens")
        for name, count in zip(inputs, request.counts)
        if name in given
    )
    if fixed and len(counts) != len(given):
        raise ValueError(
            f"fixed counts {list(request.counts)}; expected one per model input ({', '.join(inputs)})"
        )
    return Budget(
        num_visible=sum(counts) if fixed else _whole(request.num_visible, "visible tokens"),
        alphas=() if fixed else _alphas(_text(request.alphas, "Dirichlet alphas")),
        counts=counts if fixed else (),
        seed=_whole(request.seed, "seed"),
    )


def _sides(request: PageRequest) -> tuple[StrategyChoice, StrategyChoice]:
    return (
        StrategyChoice(
            _text(request.left, "left strategy"), tuple(_text(request.left_options, "left options").split())
        ),
        StrategyChoice(
            _text(request.right, "right strategy"),
            tuple(_text(request.right_options, "right options").split()),
        ),
    )


def _shares(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {'n/a' if math.isnan(v) else f'{v:.2f}'}" for name, v in values.items())


def _summary(comparison: Comparison, label: str, seconds: float) -> str:
    """Markdown: a table of the two sides, the premise on scenes, the time the comparison took."""
    sides = comparison.sides
    rows = {
        label: [f"left: {sides[0].strategy}", f"right: {sides[1].strategy}"],
        "visible tokens": [", ".join(f"{name} {count}" for name, count in s.visible.items()) for s in sides],
        f"masked share (the budget: {comparison.budget_share:.4f})": [f"{s.masked_share:.4f}" for s in sides],
    }
    if comparison.premise:
        rows["masked tokens on objects"] = [_shares(s.object_share) for s in sides]
    lines = [f"| {title} | {' | '.join(cells)} |" for title, cells in rows.items()]
    lines.insert(1, "|---|---|---|")
    if comparison.premise:
        premise, chance = dict(comparison.premise), comparison.premise["chance"]
        del premise["chance"]
        lines += [
            "",
            f"**Premise** (share of the most attended tokens that lie on objects, as pretraining's "
            f"`premise/<modality>`): {_shares(premise)}; by chance {chance:.2f}"
            + (" (no object tokens in this view)." if chance == 0 else "."),
        ]
    return "\n".join([*lines, "", f"Computed in {seconds:.2f} s."])


def respond(demo: Demo, request: PageRequest) -> PageResult:
    """The page's outputs for `request`; a value or file that does not fit is a message naming it."""
    start = time.perf_counter()
    try:
        source = _choice(request.source, "image", (SCENE, UPLOAD))
        if source == SCENE:
            image = demo.scene(_whole(request.scene, "scene number"))
        else:
            pseudo_label = request.pseudo_label
            if not isinstance(pseudo_label, bool):
                raise ValueError(f"pseudo-label checkbox {pseudo_label!r}; expected true or false")
            if not request.uploads:
                raise ValueError(
                    "no file given; drop an image on one of the inputs (rgb, depth, semseg) first"
                )
            image = demo.upload(request.uploads, pseudo_label)
        given = [name for name in demo.model.config.inputs if name in image.tensors]
        left, right = _sides(request)
        comparison = demo.compare(image, _budget(demo, request, given), left, right)
    except ValueError as error:
        return PageResult(message=f"**Cannot compare:** {error}")
    sides = comparison.sides
    return PageResult(
        left=sides[0].figure,
        right=sides[1].figure,
        left_caption=f"left: {sides[0].strategy}",
        right_caption=f"right: {sides[1].strategy}",
        summary=_summary(comparison, image.label, time.perf_counter() - start),
    )


def _bounds(bounds: tuple[float, float], sign: str = "") -> str:
    """An interval as text; n/a for one scene, which has none."""
    return "n/a" if math.isnan(bounds[0]) else f"{bounds[0]:{sign}.3f} .. {bounds[1]:{sign}.3f}"


def _scene_table(table: SceneTable, seconds: float) -> str:
    """Markdown: one row per per-scene number, its mean and 95 % interval, chance, and the difference."""
    lines = [
        f"Over held-out scenes 0..{table.scenes - 1}: the {table.with_objects} with objects in view "
        f"(left: {table.sides[0]}, right: {table.sides[1]}).",
        "",
        "| per scene | mean | 95 % interval | chance | minus chance (95 % interval) |",
        "|---|---|---|---|---|",
    ]
    for name, row in table.rows.items():
        lines.append(
            f"| {name} | {row.mean:.3f} | {_bounds(row.interval)} | {row.chance:.3f} | "
            f"{_bounds(row.above_chance, '+')} |"
        )
    lines += [
        "",
        "Chance: the objects' share of the tokens, what a choice blind to objects scores. "
        f"Computed in {seconds:.1f} s.",
    ]
    return "\n".join(lines)


def respond_across(demo: Demo, request: PageRequest, scenes: object) -> tuple[str, str]:
    """(the table over held-out scenes 0..scenes-1 as markdown, a message): the page's settings, each
    scene with its own draw of the budget over every model input."""
    start = time.perf_counter()
    try:
        count = _whole(scenes, "scenes")
        left, right = _sides(request)
        table = across_scenes(
            demo, _budget(demo, request, list(demo.model.config.inputs)), left, right, count
        )
    except ValueError as error:
        return "", f"**Cannot compare across scenes:** {error}"
    return _scene_table(table, time.perf_counter() - start), ""


def take_upload(
    demo: Demo, uploads: Mapping[str, Upload], modality: str, path: str | None, folder: str | Path
) -> tuple[dict[str, Upload], str]:
    """(the uploads with the file at `path` as `modality`'s, a message): the file is read once and checked
    alone (a file that is no image, or not one the modality reads, is refused and the uploads are kept);
    the server's copy, inside the page's upload `folder`, is removed either way. The message says what
    does not fit together (sizes)."""
    uploads = dict(uploads)
    if path is None:
        return uploads, ""
    try:
        upload = read_upload(path, modality)
        demo.upload({modality: upload})
    except ValueError as error:
        return uploads, f"**Cannot take the {modality} file:** {error}"
    finally:
        _remove_copy(Path(path), Path(folder))
    uploads[modality] = upload
    try:
        demo.upload(uploads)
    except ValueError as error:
        return uploads, f"**These files do not fit together:** {error}"
    return uploads, ""


def _remove_copy(path: Path, folder: Path) -> None:
    """Remove the server's copy of an upload, and the folder Gradio made for it once empty; nothing
    outside the page's upload folder."""
    if not path.resolve().is_relative_to(folder.resolve()):
        return
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: the same file uploaded twice at once
        path.parent.rmdir()
