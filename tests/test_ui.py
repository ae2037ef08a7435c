"""`guidedmae ui`: the compute behind the page (no browser), the command, and the page in headless Chromium."""

import shutil
import socket
import sys
from dataclasses import replace
from io import BytesIO

import numpy as np
import pytest
import torch
from PIL import Image
from test_visualize import TINY, write_run_checkpoint
from torch.utils.data import Subset

from guidedmae.cli import main
from guidedmae.engine.premise import object_class_ids, premise_measures
from guidedmae.engine.pretrain import pretraining_set
from guidedmae.infra.distributed import DistributedContext
from guidedmae.masking import MaskingConfig
from guidedmae.models import MultiMAE, MultiMAEConfig
from guidedmae.pictures import LABEL, PANEL
from guidedmae.ui.app import DIRICHLET, FIXED, SCENE, UPLOAD, PageRequest, respond, serve
from guidedmae.ui.demo import SCENES, Budget, Demo, StrategyChoice

VISIBLE = 8  # of 48 tokens (3 modalities x 4 x 4): the run's budget
SCENE_WITH_OBJECTS = 7  # a held-out scene whose objects cover 3 of the 16 tokens of the 4 x 4 grid
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "checkpoint-last.pt"
    write_run_checkpoint(path, MaskingConfig(strategy="attention", num_visible=VISIBLE))
    return path


@pytest.fixture(scope="module")
def demo(checkpoint) -> Demo:
    return Demo.load(str(checkpoint))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Uploads: an rgb photo, depth maps of its size and of another, 8-bit depth, a text file, a huge PNG."""
    folder = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / "photo.jpg")
    Image.fromarray(rng.integers(1, 9000, (40, 50), dtype=np.uint16)).save(folder / "depth.png")
    Image.fromarray(rng.integers(1, 9000, (20, 25), dtype=np.uint16)).save(folder / "small_depth.png")
    Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)).save(folder / "depth8.png")
    (folder / "notes.txt").write_text("not an image")
    Image.new("1", (6000, 5000)).save(folder / "huge.png")  # 4 KB declaring 30 megapixels
    return folder


def request(**changes) -> PageRequest:
    settings = PageRequest(
        source=SCENE, scene=SCENE_WITH_OBJECTS, files={}, pseudo_label=False, num_visible=VISIBLE,
        budget=DIRICHLET, alphas="1", counts="", seed=0, left="attention-high", left_options="",
        right="random", right_options="",
    )  # fmt: skip
    return replace(settings, **changes)


def test_every_offered_strategy_masks_exactly_the_budget(demo):
    scene, rows = demo.scene(SCENE_WITH_OBJECTS), list(demo.strategies)
    for left, right in zip(rows[0::2], rows[1::2] + rows[:1]):  # every row once, on one side
        comparison = demo.compare(scene, Budget(VISIBLE, seed=3), StrategyChoice(left), StrategyChoice(right))
        assert comparison.budget_share == 1 - VISIBLE / 48
        for side in comparison.sides:
            assert side.masked_share == comparison.budget_share, (left, right)
            assert sum(side.visible.values()) == VISIBLE


def test_both_sides_see_the_same_image_and_the_same_visible_counts(demo):
    scene = demo.scene(SCENE_WITH_OBJECTS)
    budget = Budget(VISIBLE, alphas=(0.5, 1.0, 2.0), seed=7)
    high, low = demo.compare(
        scene, budget, StrategyChoice("attention-high"), StrategyChoice("attention-low")
    ).sides
    assert high.visible == low.visible and sum(high.visible.values()) == VISIBLE
    assert high.figure.size == low.figure.size
    input_column = (slice(None), slice(LABEL, LABEL + PANEL))
    assert np.array_equal(np.asarray(high.figure)[input_column], np.asarray(low.figure)[input_column])
    assert not np.array_equal(np.asarray(high.figure), np.asarray(low.figure))  # other tokens hidden
    # The same seed, the same draw: the page shows the same picture twice.
    again = demo.compare(scene, budget, StrategyChoice("attention-high"), StrategyChoice("random")).sides[0]
    assert np.array_equal(np.asarray(again.figure), np.asarray(high.figure))


def test_fixed_counts_are_the_visible_tokens_of_each_modality(demo):
    scene = demo.scene(0)
    left, right = demo.compare(
        scene,
        Budget(0, counts=(5, 2, 0)),
        StrategyChoice("block"),
        StrategyChoice("noise-0.5", ("noise=0.2",)),
    ).sides
    assert left.visible == right.visible == {"rgb": 5, "depth": 2, "semseg": 0}
    assert right.strategy == "attention-high-noise0.2"
    assert left.masked_share == right.masked_share == 1 - 7 / 48


def test_the_premise_of_one_scene_is_pretrainings_premise_of_it(demo):
    comparison = demo.compare(
        demo.scene(SCENE_WITH_OBJECTS),
        Budget(VISIBLE),
        StrategyChoice("attention-high"),
        StrategyChoice("random"),
    )
    held_out = pretraining_set(
        replace(demo.config, eval=replace(demo.config.eval, num_samples=SCENES)), held_out=True
    )
    measured = premise_measures(
        demo.model,
        Subset(held_out, [SCENE_WITH_OBJECTS]),
        demo.config,
        DistributedContext(),
        object_class_ids(demo.config),
    )
    expected = {
        key: value for key, value in measured.items() if not key.startswith("auc_") and key != "position"
    }
    assert comparison.premise == pytest.approx(expected)
    assert 0 < comparison.premise["chance"] < 1
    for side in comparison.sides:
        assert set(side.object_share) == {"rgb", "depth", "semseg"}
        assert all(0 <= share <= 1 for share in side.object_share.values())


def test_an_rgb_only_upload_is_masked_and_its_other_modalities_predicted(demo, images):
    image = demo.upload({"rgb": str(images / "photo.jpg"), "depth": None})
    assert set(image.tensors) == {"rgb"} and image.tensors["rgb"].shape == (3, 32, 32)
    comparison = demo.compare(
        image, Budget(VISIBLE), StrategyChoice("attention-high"), StrategyChoice("random")
    )
    for side in comparison.sides:
        assert side.visible == {"rgb": VISIBLE} and side.masked_share == 1 - VISIBLE / 16
    assert comparison.premise == {}  # no scene classes to tell objects by
    with_depth = demo.upload({"rgb": str(images / "photo.jpg"), "depth": str(images / "depth.png")})
    assert set(with_depth.tensors) == {"rgb", "depth"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"files": {"rgb": "notes.txt"}}, "cannot read rgb image notes.txt: not an image file (expected .jpg"),
        ({"files": {"rgb": "huge.png"}}, "huge.png: rgb image of 6000x5000 pixels; expected at most 25 megapixels"),
        (
            {"files": {"rgb": "photo.jpg", "depth": "small_depth.png"}},
            "the images of one sample differ in size: photo.jpg is 50x40, small_depth.png is 25x20",
        ),
        ({"files": {"rgb": "photo.jpg", "depth": "depth8.png"}}, "depth8.png: depth must be a 16-bit grey PNG"),
        ({"files": {}}, "expected an image for at least one of the model's inputs (rgb, depth, semseg)"),
        ({"num_visible": 20, "files": {"rgb": "photo.jpg"}}, "20 visible tokens; expected 0..16 (the tokens of the given modalities: rgb)"),
    ],
)  # fmt: skip
def test_bad_uploads_are_messages_naming_what_was_expected(demo, images, changes, message):
    files = {name: str(images / file) for name, file in changes.pop("files").items()}
    result = respond(demo, request(source=UPLOAD, files=files, **changes))
    assert message in result.message
    assert result.left is None and result.right is None and result.left_share == ""


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scene": SCENES}, f"scene {SCENES}; expected a scene number 0..{SCENES - 1}"),
        ({"scene": None}, "scene number None; expected a whole number"),
        ({"alphas": "1, x"}, "Dirichlet alphas '1, x'; expected numbers separated by commas"),
        ({"alphas": "1, 2"}, "one or one per given modality (rgb, depth, semseg)"),
        ({"budget": FIXED, "counts": "5, 20, 1"}, "visible counts [5, 20, 1]; expected 3 (one per given modality"),
        ({"left_options": "nois=0.5"}, "Key 'nois' not in 'AttentionOptions'. Did you mean: 'noise'?"),
        ({"left_options": "noise=2"}, "masking.attention.noise=2.0; expected a value in [0, 1]"),
        ({"right_options": "noise=0.5"}, "random has no options; got noise=0.5"),
        ({"right": "loss-memory"}, "remembers each training sample by its index"),
    ],
)  # fmt: skip
def test_bad_settings_are_messages(demo, changes, message):
    result = respond(demo, request(**changes))
    assert message in result.message and result.left is None


def test_strategies_that_cannot_run_on_one_image_are_listed_with_the_reason(demo, checkpoint):
    assert {"random", "attention-high", "attention-low", "noise-0.5", "block"} <= set(demo.strategies)
    assert "this run: attention-high" in demo.strategies
    assert set(demo.excluded) == {"loss-memory", "cached-10", "predicted-loss", "scout"}
    assert "its run masked with 'attention'" in demo.excluded["predicted-loss"]


def test_an_official_file_is_shown_with_every_strategy_that_needs_no_training(tmp_path):
    official = tmp_path / "official.pth"
    torch.save({"model": MultiMAE(MultiMAEConfig(**TINY)).state_dict(), "epoch": 1599}, official)
    demo = Demo.load(str(official))
    assert list(demo.strategies)[0] == "random" and not any(
        row.startswith("this run") for row in demo.strategies
    )
    result = respond(demo, request(num_visible=10))
    assert result.left_share == result.right_share == result.budget_share == f"{1 - 10 / 48:.4f}"


def test_pseudo_labels_fill_in_what_an_upload_lacks(checkpoint, images, pseudolabel_models):
    demo = Demo.load(str(checkpoint), pseudolabel_models)
    photo = {"rgb": str(images / "photo.jpg")}
    assert set(demo.upload(photo).tensors) == {"rgb"}
    image = demo.upload(photo, pseudo_label=True)
    assert set(image.tensors) == {"rgb", "depth", "semseg"} and image.tensors["semseg"].shape == (8, 8)
    assert image.label == "rgb: photo.jpg, depth: pseudo label, semseg: pseudo label"
    side = demo.compare(
        image, Budget(VISIBLE), StrategyChoice("attention-high"), StrategyChoice("random")
    ).sides[0]
    assert sum(side.visible.values()) == VISIBLE and len(side.visible) == 3
    message = respond(
        demo, request(source=UPLOAD, files={"depth": str(images / "depth.png")}, pseudo_label=True)
    )
    assert "pseudo labels (semseg) are predicted from rgb; upload an rgb image" in message.message


def test_the_command_fails_before_serving_a_checkpoint_that_does_not_load(tmp_path, capsys, monkeypatch):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    assert main(["ui", str(broken)]) == 1
    assert f"guidedmae ui: error: {broken}" in capsys.readouterr().err
    run = tmp_path / "run.pt"
    write_run_checkpoint(run, MaskingConfig(num_visible=VISIBLE))
    assert main(["ui", str(run), "--pseudolabel-depth", str(tmp_path / "nowhere")]) == 1
    assert f"--pseudolabel-depth {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if not installed
    assert main(["ui", str(broken)]) == 1
    assert "guidedmae ui needs gradio: pip install 'guidedmae[ui]'" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _summary_shows(page, text: str) -> None:
    page.wait_for_function(
        "text => { const s = document.querySelector('#summary'); return s && s.innerText.includes(text); }",
        arg=text,
        timeout=60_000,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")
def test_the_page_in_a_browser_compares_two_strategies_on_a_scene(demo, images):
    pytest.importorskip("gradio", reason="gradio is the ui extra: pip install 'guidedmae[ui]'")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright drives the browser")

    port = _free_port()
    server = serve(demo, "127.0.0.1", port, block=False)
    try:
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            _summary_shows(page, "held-out scene 0")  # the defaults, compared on opening
            page.fill("#scene input", "3")
            page.get_by_label("left strategy").click()
            page.get_by_role("option", name="attention-low", exact=True).click()
            page.click("#compare")
            _summary_shows(page, "held-out scene 3")
            assert "left: attention-low" in page.inner_text("#summary")
            shares = [
                page.input_value(f"#{name} textarea")
                for name in ("budget-share", "left-share", "right-share")
            ]
            assert shares == [f"{1 - VISIBLE / 48:.4f}"] * 3
            # The pictures are those the compute function draws for the same settings, pixel for pixel.
            expected = demo.compare(
                demo.scene(3), Budget(VISIBLE), StrategyChoice("attention-low"), StrategyChoice("random")
            )
            for side, name in zip(expected.sides, ("left", "right")):
                shown = Image.open(
                    BytesIO(page.request.get(page.get_attribute(f"#{name}-figure img", "src")).body())
                )
                assert shown.size == side.figure.size
                assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(side.figure))
            # A file that is no image: a message on the page, and the page goes on.
            page.get_by_label(UPLOAD, exact=True).check()
            page.set_input_files("#file-rgb input[type=file]", str(images / "notes.txt"))
            page.click("#compare")
            page.wait_for_selector("#message :text('not an image file')", timeout=60_000)
            browser.close()
    finally:
        server.close()
