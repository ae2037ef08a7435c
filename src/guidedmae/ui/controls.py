"""The `guidedmae ui` page (Gradio): controls in, demo.Demo computes, pictures and numbers out.

`respond` turns what the controls hold (text and numbers, as Gradio gives them) into the page's outputs,
with a bad value or file shown as a message; `build_page` lays the controls out and `serve` runs the
page. Gradio is imported only when a page is built: `pip install 'guidedmae[ui]'`.
"""

import math
import re
import time
from dataclasses import dataclass, fields

from PIL import Image

from guidedmae.masking import STRATEGIES
from guidedmae.ui.demo import SCENES, Budget, Comparison, Demo, StrategyChoice

__all__ = ["PageRequest", "PageResult", "build_page", "require_gradio", "respond", "serve"]

SCENE, UPLOAD = "synthetic scene", "upload"
DIRICHLET, FIXED = "Dirichlet draw", "fixed counts"
MAX_FILE_SIZE = "50mb"  # uploads beyond this are refused by the server before they are stored


def require_gradio():
    """The gradio module, or a message saying how to install it."""
    try:
        import gradio
    except ImportError as error:
        raise ValueError("guidedmae ui needs gradio: pip install 'guidedmae[ui]'") from error
    return gradio


@dataclass
class PageRequest:
    """What the controls hold, as Gradio gives them (numbers may be None when a field is emptied)."""

    source: str  # SCENE or UPLOAD
    scene: float | None
    files: dict[str, str | None]  # {model input: uploaded file's path}
    pseudo_label: bool  # fill in the inputs an upload lacks with the pseudo-label models
    num_visible: float | None
    budget: str  # DIRICHLET or FIXED
    alphas: str  # "1" or "1, 0.5, 2"
    counts: str  # "20, 8, 4"
    seed: float | None
    left: str
    left_options: str  # "noise=0.25 heads=2"
    right: str
    right_options: str


@dataclass
class PageResult:
    """What the page shows; on bad input only the message."""

    left: Image.Image | None = None
    right: Image.Image | None = None
    budget_share: str = ""  # the masked share the budget sets, "0.8333"
    left_share: str = ""  # the masked share each side's masks have
    right_share: str = ""
    summary: str = ""  # markdown: the image, the visible counts, the object shares, the premise, the time
    message: str = ""


def _whole(value: float | None, what: str) -> int:
    if value is None or not float(value).is_integer():
        raise ValueError(f"{what} {value!r}; expected a whole number")
    return int(value)


def _numbers(text: str, what: str, kind: type) -> tuple:
    words = [word for word in re.split(r"[,\s]+", text.strip()) if word]
    try:
        return tuple(kind(word) for word in words)
    except ValueError:
        example = "1, 0.5, 2" if kind is float else "20, 8, 4"
        raise ValueError(f"{what} {text!r}; expected numbers separated by commas, e.g. {example}") from None


def _shares(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {'n/a' if math.isnan(v) else f'{v:.2f}'}" for name, v in values.items())


def _summary(comparison: Comparison, label: str, seconds: float) -> str:
    """Markdown: a table of the two sides, the premise on scenes, the time the comparison took."""
    sides = comparison.sides
    rows = {
        label: [f"left: {sides[0].strategy}", f"right: {sides[1].strategy}"],
        "visible tokens": [", ".join(f"{name} {count}" for name, count in s.visible.items()) for s in sides],
        "masked share": [f"{s.masked_share:.4f}" for s in sides],
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
        if request.source == SCENE:
            image = demo.scene(_whole(request.scene, "scene number"))
        else:
            image = demo.upload(request.files, request.pseudo_label)
        fixed = request.budget == FIXED
        counts = _numbers(request.counts, "fixed counts", int) if fixed else ()
        if fixed and not counts:
            raise ValueError("fixed counts ''; expected one visible count per given modality, e.g. 20, 8, 4")
        budget = Budget(
            num_visible=sum(counts) if fixed else _whole(request.num_visible, "visible tokens"),
            alphas=_numbers(request.alphas, "Dirichlet alphas", float) or (1.0,),
            counts=counts,
            seed=_whole(request.seed, "seed"),
        )
        comparison = demo.compare(
            image,
            budget,
            StrategyChoice(request.left, tuple(request.left_options.split())),
            StrategyChoice(request.right, tuple(request.right_options.split())),
        )
    except ValueError as error:
        return PageResult(message=f"**Cannot compare:** {error}")
    left, right = comparison.sides
    return PageResult(
        left=left.figure,
        right=right.figure,
        budget_share=f"{comparison.budget_share:.4f}",
        left_share=f"{left.masked_share:.4f}",
        right_share=f"{right.masked_share:.4f}",
        summary=_summary(comparison, image.label, time.perf_counter() - start),
    )


def _header(demo: Demo) -> str:
    config = demo.model.config
    strategies = dict.fromkeys(masking.strategy for masking in demo.strategies.values())
    options = {name: [field.name for field in fields(STRATEGIES[name].options_class)] for name in strategies}
    keys = "; ".join(f"{name}: {', '.join(names)}" for name, names in options.items() if names)
    lines = [
        f"## guidedmae: `{demo.path}`",
        f"Inputs {', '.join(config.inputs)}, outputs {', '.join(config.outputs)}; {config.image_size} px "
        f"images, {demo.tokens_per_modality} tokens per modality. Two masking strategies on the same image, "
        f"with the same visible counts and seed. Options (key=value, over the row's) of {keys}.",
    ]
    return "\n\n".join(lines)


def build_page(demo: Demo):
    """The page of `demo` as a gradio.Blocks; it compares the default settings when it opens."""
    gr = require_gradio()
    config, inputs = demo.config, demo.model.config.inputs
    total = demo.tokens_per_modality * len(inputs)
    with gr.Blocks(title="guidedmae", analytics_enabled=False) as page:
        gr.Markdown(_header(demo))
        if demo.excluded:
            with gr.Accordion(f"strategies not offered here ({len(demo.excluded)})", open=False):
                gr.Markdown("\n".join(f"- **{row}**: {why}" for row, why in demo.excluded.items()))
        with gr.Row():
            with gr.Column():
                source = gr.Radio([SCENE, UPLOAD], value=SCENE, label="image", elem_id="source")
                scene = gr.Number(0, precision=0, label=f"held-out scene (0..{SCENES - 1})", elem_id="scene")
                pseudo_label = gr.Checkbox(
                    False,
                    label=f"pseudo-label what an upload lacks ({', '.join(demo.labellers)}) from its rgb",
                    visible=bool(demo.labellers),
                )
            with gr.Column():
                num_visible = gr.Slider(
                    0, total, value=min(config.masking.num_visible, total), step=1, label="visible tokens",
                    elem_id="num-visible",
                )  # fmt: skip
                budget = gr.Radio([DIRICHLET, FIXED], value=DIRICHLET, label="visible tokens per modality")
                alphas = gr.Textbox(
                    ", ".join(f"{alpha:g}" for alpha in config.masking.alphas),
                    label="Dirichlet alphas: one, or one per given modality",
                )
                counts = gr.Textbox(
                    "", label="fixed counts: one per given modality", placeholder="e.g. 20, 8, 4"
                )
                seed = gr.Number(config.seed, precision=0, label="seed", elem_id="seed")
            with gr.Column():
                rows = list(demo.strategies)
                left = gr.Dropdown(rows, value=rows[0], label="left strategy", elem_id="left-strategy")
                left_options = gr.Textbox("", label="left options", placeholder="e.g. noise=0.25 heads=2")
                right = gr.Dropdown(rows, value="random", label="right strategy", elem_id="right-strategy")
                right_options = gr.Textbox("", label="right options", placeholder="e.g. select=low")
                button = gr.Button("Compare", variant="primary", elem_id="compare")
        with gr.Row():  # used when the image is an upload: any of the model's inputs
            files = [
                gr.File(label=f"{name} ({' / '.join(demo.model.modalities[name].extensions)})",
                        height=120, elem_id=f"file-{name}")
                for name in inputs
            ]  # fmt: skip
        message = gr.Markdown(elem_id="message")
        with gr.Row():
            budget_share = gr.Textbox(label="masked share the budget sets", elem_id="budget-share")
            left_share = gr.Textbox(label="left: masked share", elem_id="left-share")
            right_share = gr.Textbox(label="right: masked share", elem_id="right-share")
        with gr.Row():
            left_figure = gr.Image(type="pil", format="png", label="left", elem_id="left-figure")
            right_figure = gr.Image(type="pil", format="png", label="right", elem_id="right-figure")
        summary = gr.Markdown(elem_id="summary")

        # In PageRequest's order, the files in the model's input order; the outputs in PageResult's.
        controls = [source, scene, *files, pseudo_label, num_visible, budget, alphas, counts, seed,
                    left, left_options, right, right_options]  # fmt: skip
        outputs = [left_figure, right_figure, budget_share, left_share, right_share, summary, message]

        def compute(source, scene, *values):
            uploads, settings = values[: len(inputs)], values[len(inputs) :]
            result = respond(demo, PageRequest(source, scene, dict(zip(inputs, uploads)), *settings))
            return [getattr(result, field.name) for field in fields(PageResult)]

        button.click(compute, controls, outputs)
        page.load(compute, controls, outputs)
    return page


def serve(demo: Demo, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve the page of `demo` at http://host:port; block: until Ctrl-C (then close it), else return the
    running page (close it with .close())."""
    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port}; expected a port number 1..65535")
    page = build_page(demo)
    page.launch(
        server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, max_file_size=MAX_FILE_SIZE
    )
    print(f"guidedmae ui: serving {demo.path} at http://{host}:{port} (Ctrl-C stops)", flush=True)
    if block:
        try:
            page.block_thread()
        except KeyboardInterrupt:  # Ctrl-C is how a server stops: no "interrupted" error
            page.close()
            print("guidedmae ui: stopped", flush=True)
    return page
