"""The `guidedmae ui` page (Gradio): the controls laid out, wired to `ui.controls`, and served.

Every event hands the controls' values to `ui.controls` unprocessed (`preprocess=False`), so that a value
the browser or the HTTP API sends that does not fit (an empty number, text in a slider) is a message on
the page naming the control, never an error of Gradio's. Pictures go to the page inline (data URLs) and
a dropped file is read once and its server copy removed: a request leaves no file behind. Gradio is
imported only when a page is built: `pip install 'guidedmae[ui]'`.
"""

import base64
import html
import io
import time
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from PIL import Image

from guidedmae.ui.controls import (
    DIRICHLET,
    FIXED,
    SCENE,
    UPLOAD,
    PageRequest,
    budget_setting,
    given_modalities,
    respond,
    respond_across,
    take_upload,
)
from guidedmae.ui.demo import SCENES, Demo
from guidedmae.ui.figure import input_picture
from guidedmae.ui.scenes import MAX_SCENES
from guidedmae.ui.uploads import Upload

if TYPE_CHECKING:
    import gradio  # an extra: imported when a page is built

__all__ = ["PageRequest", "build_page", "require_gradio", "respond", "serve"]

MAX_FILE_SIZE = "50mb"  # uploads beyond this are refused by the server before they are stored
# Files Gradio stores that no event read (an upload whose event never ran) are removed after an hour,
# and all of them when the server closes.
DELETE_CACHE = (3600, 3600)
# Compact controls, so that both pictures are on the first screen of a 1440x900 window; pictures keep a
# readable width, scrolled sideways on a phone.
CSS = """
.gradio-container { padding-top: 4px !important; --layout-gap: 10px; }
#header p { margin: 0; }
#trained-on { font-size: 12px; line-height: 1.3; }
.drop [data-testid="upload-text"] { visibility: hidden; }
#left-figure, #right-figure { padding: 0 !important; }
.side { margin: 0; }
.side figcaption { font-weight: bold; margin-bottom: 2px; }
.figure { overflow-x: auto; }
.figure img { display: block; max-width: 100%; min-width: 440px; height: auto; }
.preview figure { margin: 0; font-size: 12px; line-height: 1.2; overflow-wrap: anywhere; }
"""


def require_gradio() -> ModuleType:
    """The gradio module, or a message saying how to install it."""
    try:
        import gradio
    except ImportError as error:
        raise ValueError("guidedmae ui needs gradio: pip install 'guidedmae[ui]'") from error
    return gradio


def _img(image: Image.Image, alt: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _figure(image: Image.Image | None, caption: str) -> str:
    """One side's picture under its caption (the side and its strategy)."""
    if image is None:
        return ""
    return (
        f'<figure class="side"><figcaption>{html.escape(caption)}</figcaption>'
        f'<div class="figure">{_img(image, caption)}</div></figure>'
    )


def _preview(demo: Demo, name: str, uploads: dict) -> str:
    """The upload of modality `name` as the model sees it (centre crop at its size), with its file name."""
    if name not in uploads:
        return ""
    try:
        tensor = demo.upload({name: uploads[name]}).tensors[name]
    except ValueError:  # checked when it was taken; nothing to draw otherwise
        return ""
    caption = html.escape(uploads[name].name)
    picture = _img(
        input_picture(name, tensor, demo.model.modalities[name], 64), f"{name}: {uploads[name].name}"
    )
    return f"<figure>{picture}<figcaption>{caption}</figcaption></figure>"


def _header(demo: Demo) -> str:
    return (
        f"**guidedmae** `{demo.path}`, trained on {demo.trained_on}: two masking strategies on one image, "
        "with the same visible counts and seed."
    )


def build_page(demo: Demo) -> "gradio.Blocks":
    """The page of `demo` as a gradio.Blocks; it compares the default settings when it opens."""
    gr = require_gradio()
    inputs, tokens = demo.model.config.inputs, demo.tokens_per_modality
    setting = budget_setting(demo, list(inputs))
    left_row, right_row = demo.default_sides
    menu = [(label, row) for row, label in demo.labels.items()]
    with gr.Blocks(
        title="guidedmae", analytics_enabled=False, fill_width=True, delete_cache=DELETE_CACHE
    ) as page:
        uploads = gr.State({})
        gr.Markdown(_header(demo), elem_id="header")
        with gr.Row(equal_height=False, elem_id="controls"):
            with gr.Column(scale=5, min_width=340):
                with gr.Row():
                    source = gr.Radio(
                        [SCENE, UPLOAD],
                        value=SCENE,
                        label="image",
                        show_label=False,
                        elem_id="source",
                        scale=2,
                    )
                    scene = gr.Number(
                        demo.default_scene(), precision=0, label=f"scene (0..{SCENES - 1})", elem_id="scene",
                        min_width=110, scale=0,
                    )  # fmt: skip
                files, previews, removes = [], [], []
                with gr.Row():
                    for name in inputs:  # per input: its drop zone, then what was dropped, and its removal
                        with gr.Column(min_width=90):
                            files.append(gr.File(label=f"{name}: drop or click", height=44, elem_id=f"file-{name}",
                                                 elem_classes="drop"))  # fmt: skip
                            with gr.Row(equal_height=False):
                                previews.append(
                                    gr.HTML(elem_id=f"preview-{name}", elem_classes="preview", min_width=64)
                                )
                                removes.append(gr.Button("✕", size="sm", visible=False, elem_id=f"remove-{name}",
                                                         min_width=30, scale=0))  # fmt: skip
                with gr.Column(visible=False) as upload_box:
                    pseudo_label = gr.Checkbox(
                        False, visible=bool(demo.labellers), elem_id="pseudo-label",
                        label=f"pseudo-label what an upload lacks ({', '.join(demo.labellers)}) from its rgb",
                    )  # fmt: skip
                    gr.Markdown(
                        f"Trained on {demo.trained_on}: what an upload lacks is a guess on images unlike those.",
                        elem_id="trained-on",
                    )
            with gr.Column(scale=6, min_width=340):
                num_visible = gr.Slider(
                    0, setting.maximum, value=setting.value, step=1, label=setting.label, elem_id="num-visible"
                )  # fmt: skip
                with gr.Row():
                    budget = gr.Radio(
                        [DIRICHLET, FIXED], value=DIRICHLET, label="split among the modalities",
                        elem_id="budget", scale=4, min_width=260,
                    )  # fmt: skip
                    alphas = gr.Textbox(
                        ", ".join(f"{alpha:g}" for alpha in demo.config.masking.alphas), elem_id="alphas",
                        label="Dirichlet alphas", scale=0, min_width=100,
                    )  # fmt: skip
                    seed = gr.Number(
                        demo.config.seed, precision=0, label="seed", elem_id="seed", min_width=70
                    )
                with gr.Row():
                    counts = [
                        gr.Slider(0, tokens, value=0, step=1, label=f"{name} visible", visible=False,
                                  elem_id=f"count-{name}", min_width=100)
                        for name in inputs
                    ]  # fmt: skip
            with gr.Column(scale=6, min_width=360):
                with gr.Row():
                    with gr.Column(min_width=170):
                        left = gr.Dropdown(
                            menu, value=left_row, label="left strategy", elem_id="left-strategy"
                        )
                        left_options = gr.Textbox(
                            "", label="left options", placeholder="e.g. noise=0.25", elem_id="left-options"
                        )
                    with gr.Column(min_width=170):
                        right = gr.Dropdown(
                            menu, value=right_row, label="right strategy", elem_id="right-strategy"
                        )
                        right_options = gr.Textbox(
                            "", label="right options", placeholder="e.g. select=low", elem_id="right-options"
                        )
                button = gr.Button("Compare", variant="primary", elem_id="compare")
        message = gr.Markdown(elem_id="message")
        with gr.Row(equal_height=False):
            with gr.Column(min_width=440):
                left_figure = gr.HTML(elem_id="left-figure")
            with gr.Column(min_width=440):
                right_figure = gr.HTML(elem_id="right-figure")
        summary = gr.Markdown(elem_id="summary")
        with gr.Column(visible=True) as across:
            gr.Markdown(
                "**Across held-out scenes:** the same settings on many scenes, each with its own draw of the "
                "budget: the share of each side's masked tokens on objects, and the premise, with 95 % intervals."
            )
            with gr.Row():
                scenes = gr.Number(
                    200, precision=0, label=f"scenes (1..{MAX_SCENES})", elem_id="scenes", scale=1
                )
                across_button = gr.Button("Compare across scenes", elem_id="compare-across", scale=2)
            across_message = gr.Markdown(elem_id="across-message")
            across_table = gr.Markdown(elem_id="across-table")
        if demo.excluded:
            with gr.Accordion(f"strategies not offered here ({len(demo.excluded)})", open=False):
                gr.Markdown("\n".join(f"- **{row}**: {why}" for row, why in demo.excluded.items()))

        # The compute endpoint's inputs (the HTTP API's, less the session's uploads) and outputs, in
        # PageRequest's and PageResult's order.
        controls = [source, scene, uploads, pseudo_label, num_visible, budget, alphas, *counts, seed,
                    left, left_options, right, right_options]  # fmt: skip
        outputs = [left_figure, right_figure, summary, message]

        def request(values: tuple) -> PageRequest:
            source, scene, uploads, pseudo_label, num_visible, budget, alphas, *rest = values
            counts, (seed, left, left_options, right, right_options) = (
                rest[: len(inputs)],
                rest[len(inputs) :],
            )
            return PageRequest(source, scene, uploads or {}, pseudo_label, num_visible, budget, alphas,
                               tuple(counts), seed, left, left_options, right, right_options)  # fmt: skip

        def compute(*values: object) -> list:
            result = respond(demo, request(values))
            return [_figure(result.left, result.left_caption), _figure(result.right, result.right_caption),
                    result.summary, result.message]  # fmt: skip

        def compute_across(*values: object) -> tuple[str, str]:
            return respond_across(demo, request(values[:-1]), values[-1])

        # What depends on the image's modalities and the budget's kind: the scene number or the uploads'
        # controls, the slider's range (the given modalities' tokens, the checkpoint's masked share) and
        # the fixed counts (one slider per given modality; the total follows them).
        layout = [scene, upload_box, across, num_visible, alphas, *counts, *previews, *removes]

        def relayout(source: str, uploads: dict[str, Upload], budget: str) -> list:
            given = given_modalities(demo, source, uploads)
            setting, fixed = budget_setting(demo, given), budget == FIXED
            split = {
                name: setting.value // len(given) + (index < setting.value % len(given))
                for index, name in enumerate(given)
            }
            return [
                gr.update(visible=source == SCENE),
                gr.update(visible=source == UPLOAD),
                gr.update(visible=source == SCENE),
                gr.update(
                    maximum=setting.maximum, value=setting.value, label=setting.label, interactive=not fixed
                ),
                gr.update(visible=not fixed),
                *(gr.update(visible=fixed and name in given, value=split.get(name, 0)) for name in inputs),
                *(_preview(demo, name, uploads) if source == UPLOAD else "" for name in inputs),
                *(gr.update(visible=source == UPLOAD and name in uploads) for name in inputs),
            ]

        def upload(name: str) -> Callable:
            def take(uploads: dict[str, Upload], path: str | None) -> tuple:
                uploads, said = take_upload(demo, uploads, name, path, page.GRADIO_CACHE)
                return uploads, None, UPLOAD if uploads else SCENE, said

            return take

        def remove(name: str) -> Callable:
            def drop(uploads: dict[str, Upload]) -> tuple:
                uploads = {key: value for key, value in uploads.items() if key != name}
                return uploads, UPLOAD if uploads else SCENE

            return drop

        def total(budget: str, *counts: int | None) -> object:
            return sum(count or 0 for count in counts) if budget == FIXED else gr.update()

        for name, file, button_ in zip(inputs, files, removes):
            file.upload(upload(name), [uploads, file], [uploads, file, source, message], api_name=f"upload_{name}").then(
                relayout, [source, uploads, budget], layout, api_visibility="private"
            )  # fmt: skip
            button_.click(remove(name), [uploads], [uploads, source], api_visibility="private").then(
                relayout, [source, uploads, budget], layout, api_visibility="private"
            )  # fmt: skip
        for control in (source, budget):
            control.input(relayout, [source, uploads, budget], layout, api_visibility="private")
        for count in counts:
            count.input(total, [budget, *counts], num_visible, api_visibility="private")
        # The old message goes as soon as a new comparison starts.
        button.click(lambda: "", None, message, queue=False, api_visibility="private").then(
            compute, controls, outputs, preprocess=False, api_name="compute"
        )
        across_button.click(lambda: ("", ""), None, [across_message, across_table], queue=False, api_visibility="private").then(
            compute_across, [*controls, scenes], [across_table, across_message], preprocess=False, api_name="across"
        )  # fmt: skip
        page.load(compute, controls, outputs, preprocess=False, api_visibility="private")
    return page


def serve(demo: Demo, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> "gradio.Blocks":
    """Serve the page of `demo` at http://host:port; block: until Ctrl-C (then close it), else return the
    running page (close it with .close())."""
    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port}; expected a port number 1..65535")
    page = build_page(demo)
    try:
        page.launch(
            server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
            max_file_size=MAX_FILE_SIZE, css=CSS,
        )  # fmt: skip
    except OSError:  # Gradio's "Cannot find empty port": the port is taken, or the address not this machine's
        raise ValueError(
            f"--port {port}: cannot listen at {host}:{port} (the port is in use, or {host} is not an address "
            "of this machine); choose another port with --port"
        ) from None
    serving = f"guidedmae ui: serving {demo.path} at http://{host}:{port} (Ctrl-C stops)"
    if not block:
        print(serving, flush=True)
        return page
    try:  # from before the line that says Ctrl-C stops it
        print(serving, flush=True)
        while page.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:  # Ctrl-C is how a server stops: no "interrupted" error
        page.close(verbose=False)
        print("guidedmae ui: stopped", flush=True)
    return page
