"""`guidedmae ui`: the compute behind the page (no browser), the command, its HTTP API and the page in
headless Chromium."""

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_visualize import TINY, write_run_checkpoint
from torch.utils.data import Subset

from guidedmae.cli import main
from guidedmae.config import DataConfig, ModelSettings, PretrainConfig, config_to_dict
from guidedmae.data.transforms import AugmentConfig
from guidedmae.engine.premise import object_class_ids, premise_measures
from guidedmae.engine.pretrain import pretraining_set
from guidedmae.infra.distributed import DistributedContext
from guidedmae.masking import MaskingConfig
from guidedmae.models import MultiMAE, MultiMAEConfig
from guidedmae.ui.app import serve
from guidedmae.ui.controls import (
    DIRICHLET,
    FIXED,
    SCENE,
    UPLOAD,
    PageRequest,
    budget_setting,
    respond,
    respond_across,
    take_upload,
)
from guidedmae.ui.demo import SCENES, Budget, Demo, StrategyChoice
from guidedmae.ui.scenes import across_scenes
from guidedmae.ui.uploads import read_upload

VISIBLE = 8  # of 48 tokens (3 modalities x 4 x 4): the run's budget
SCENE_WITH_OBJECTS = 7  # a held-out scene whose objects cover 3 of the 16 tokens of the 4 x 4 grid
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "checkpoint-last.pt"
    # The same weights in every run (a module's fixture is made before the per-test seed): an untrained
    # model's near-equal attention ranks tokens alike only for the same weights and the same batches.
    torch.manual_seed(0)
    write_run_checkpoint(path, MaskingConfig(strategy="attention", num_visible=VISIBLE))
    return path


@pytest.fixture(scope="module")
def demo(checkpoint) -> Demo:
    return Demo.load(str(checkpoint))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Uploads: two rgb photos, depth maps of their size and of another, 8-bit depth, a text file, a huge PNG."""
    folder = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / "photo.png")
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / "other.png")
    Image.fromarray(rng.integers(1, 9000, (40, 50), dtype=np.uint16)).save(folder / "depth.png")
    Image.fromarray(rng.integers(1, 9000, (20, 25), dtype=np.uint16)).save(folder / "small_depth.png")
    Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)).save(folder / "depth8.png")
    (folder / "notes.txt").write_text("not an image")
    Image.new("1", (6000, 5000)).save(folder / "huge.png")  # 4 KB declaring 30 megapixels
    return folder


def request(**changes) -> PageRequest:
    settings = PageRequest(
        source=SCENE, scene=SCENE_WITH_OBJECTS, uploads={}, pseudo_label=False, num_visible=VISIBLE,
        budget=DIRICHLET, alphas="1", counts=(0, 0, 0), seed=0, left="attention-high", left_options="",
        right="random", right_options="",
    )  # fmt: skip
    return replace(settings, **changes)


def uploads(images, **files) -> dict:
    return {name: read_upload(images / file, name) for name, file in files.items()}


def test_every_offered_strategy_masks_exactly_the_budget(demo):
    scene, rows = demo.scene(SCENE_WITH_OBJECTS), list(demo.strategies)
    for left, right in zip(rows[0::2], rows[1::2] + rows[:1]):  # every row once, on one side
        comparison = demo.compare(scene, Budget(VISIBLE, seed=3), StrategyChoice(left), StrategyChoice(right))
        assert comparison.budget_share == 1 - VISIBLE / 48
        for side in comparison.sides:
            assert side.masked_share == comparison.budget_share, (left, right)
            assert sum(side.visible.values()) == VISIBLE


def test_both_sides_get_the_same_visible_counts_and_differ_in_which_tokens(demo):
    scene = demo.scene(SCENE_WITH_OBJECTS)
    budget = Budget(VISIBLE, alphas=(0.5, 1.0, 2.0), seed=7)
    high, low = demo.compare(
        scene, budget, StrategyChoice("attention-high"), StrategyChoice("attention-low")
    ).sides
    assert high.visible == low.visible and sum(high.visible.values()) == VISIBLE
    # The most and the least attended tokens: no token is hidden by both where fewer than half are.
    for name, mask in high.masks.items():
        if mask.sum() <= len(mask) // 2:
            assert not (mask & low.masks[name]).any()
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


def test_the_premise_over_many_scenes_is_pretrainings_and_masking_everything_scores_chance(demo):
    table = across_scenes(demo, Budget(0), StrategyChoice("attention-high"), StrategyChoice("random"), 30)
    held_out = pretraining_set(
        replace(demo.config, eval=replace(demo.config.eval, num_samples=SCENES)), held_out=True
    )
    expected = premise_measures(
        demo.model,
        Subset(held_out, range(30)),
        demo.config,
        DistributedContext(),
        object_class_ids(demo.config),
    )
    assert table.scenes == 30 and 0 < table.with_objects <= 30
    for name in ("rgb", "depth", "semseg"):
        row = table.rows[f"premise, {name}: most attended tokens on objects"]
        assert row.mean == pytest.approx(expected[name]) and row.chance == pytest.approx(expected["chance"])
        assert row.interval[0] <= row.mean <= row.interval[1]
        auc = table.rows[f"premise, {name}: attention AUC for object tokens"]
        # near-equal scores may order differently in another batch composition: the AUC to a hundredth
        assert auc.mean == pytest.approx(expected[f"auc_{name}"], abs=0.01) and auc.chance == 0.5
    position = table.rows["position alone: most object-frequent positions on objects"]
    assert position.mean == pytest.approx(expected["position"]) and position.mean > position.chance
    # No token visible: every token is masked, so the masked tokens on objects are the objects' share.
    for side in ("left", "right"):
        row = table.rows[f"{side}: masked tokens on objects"]
        assert row.mean == pytest.approx(expected["chance"]) and row.above_chance == pytest.approx((0, 0))
    assert table.sides == ("attention-high", "random")


def test_across_scenes_each_scene_draws_its_own_split_of_the_budget(demo):
    page = respond_across(demo, request(alphas="0.2"), 20)[0]
    assert "Over held-out scenes 0..19" in page and "| left: masked tokens on objects |" in page
    counts = demo.visible_counts(Budget(VISIBLE, alphas=(0.2,)), ["rgb", "depth", "semseg"], 20)
    assert (counts.sum(dim=1) == VISIBLE).all() and len(set(map(tuple, counts.tolist()))) > 1
    assert (
        respond_across(demo, request(), 0)[1]
        == "**Cannot compare across scenes:** 0 scenes; expected 1..1000"
    )
    one = respond_across(demo, request(), 1)[0]  # scene 0 has objects; one scene has no interval
    assert "the 1 with objects in view" in one and "| n/a | 0.062 | n/a |" in one


def test_an_rgb_only_upload_is_masked_and_its_other_modalities_predicted(demo, images):
    image = demo.upload({"rgb": str(images / "photo.png"), "depth": None})
    assert set(image.tensors) == {"rgb"} and image.tensors["rgb"].shape == (3, 32, 32)
    comparison = demo.compare(
        image, Budget(VISIBLE), StrategyChoice("attention-high"), StrategyChoice("random")
    )
    for side in comparison.sides:
        assert side.visible == {"rgb": VISIBLE} and side.masked_share == 1 - VISIBLE / 16
    assert comparison.premise == {}  # no scene classes to tell objects by
    with_depth = demo.upload(uploads(images, rgb="photo.png", depth="depth.png"))
    assert set(with_depth.tensors) == {"rgb", "depth"}


def test_the_budget_follows_the_given_modalities_and_keeps_the_runs_masked_share(demo):
    everything = budget_setting(demo, ["rgb", "depth", "semseg"])
    assert (everything.maximum, everything.value) == (48, VISIBLE)
    rgb = budget_setting(demo, ["rgb"])
    assert (rgb.maximum, rgb.value) == (16, 3)  # 8/48 of 16 tokens, rounded
    assert rgb.label == "visible tokens of the 16 of rgb (default 3: the run's 81% masked)"


def test_a_file_is_read_once_checked_alone_and_its_server_copy_removed(demo, images, tmp_path):
    def copied(file: str) -> str:
        folder = tmp_path / "cache" / file  # as Gradio stores an upload: a folder of its own
        folder.mkdir(parents=True)
        return str(shutil.copy(images / file, folder / file))

    taken, message = take_upload(demo, {}, "rgb", copied("photo.png"), tmp_path / "cache")
    assert message == "" and taken["rgb"].name == "photo.png"
    assert not (tmp_path / "cache" / "photo.png").exists()  # the copy and its folder
    kept, message = take_upload(demo, taken, "depth", copied("notes.txt"), tmp_path / "cache")
    assert kept == taken and message.startswith(
        "**Cannot take the depth file:** cannot read depth image notes.txt"
    )
    both, message = take_upload(demo, taken, "depth", copied("small_depth.png"), tmp_path / "cache")
    assert set(both) == {"rgb", "depth"} and "photo.png is 50x40, small_depth.png is 25x20" in message
    assert list((tmp_path / "cache").iterdir()) == []
    outside = shutil.copy(images / "photo.png", tmp_path / "photo.png")
    take_upload(demo, {}, "rgb", outside, tmp_path / "cache")
    assert Path(outside).exists()  # nothing outside the page's upload folder is removed


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"rgb": "notes.txt"}, "cannot read rgb image notes.txt: not an image file (expected .jpg"),
        ({"rgb": "huge.png"}, "huge.png: rgb image of 6000x5000 pixels; expected at most 25 megapixels"),
        ({"depth": "depth8.png"}, "depth8.png: depth must be a 16-bit grey PNG"),
    ],
)
def test_bad_files_are_messages_naming_what_was_expected(demo, images, tmp_path, files, message):
    ((name, file),) = files.items()
    shutil.copy(images / file, tmp_path / file)
    taken, said = take_upload(demo, {}, name, str(tmp_path / file), tmp_path)
    assert taken == {} and message in said


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, "no file given; drop an image on one of the inputs (rgb, depth, semseg) first"),
        ({"files": {"rgb": "photo.png", "depth": "small_depth.png"}},
         "the images of one sample differ in size: photo.png is 50x40, small_depth.png is 25x20"),
        ({"num_visible": 20, "files": {"rgb": "photo.png"}},
         "20 visible tokens; expected 0..16 (the tokens of the given modalities: rgb)"),
        ({"pseudo_label": "yes", "files": {"rgb": "photo.png"}}, "pseudo-label checkbox 'yes'; expected true or false"),
    ],
)  # fmt: skip
def test_bad_uploads_are_messages(demo, images, changes, message):
    files = uploads(images, **changes.pop("files", {}))
    result = respond(demo, request(source=UPLOAD, uploads=files, **changes))
    assert message in result.message
    assert result.left is None and result.right is None and result.summary == ""


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scene": SCENES}, f"scene {SCENES}; expected a scene number 0..{SCENES - 1}"),
        ({"scene": None}, "scene number None; expected a whole number"),
        ({"scene": "abc"}, "scene number 'abc'; expected a whole number"),
        ({"num_visible": None}, "visible tokens None; expected a whole number"),
        ({"num_visible": "abc"}, "visible tokens 'abc'; expected a whole number"),
        ({"seed": 1.5}, "seed 1.5; expected a whole number"),
        ({"source": "scene"}, "image 'scene'; expected one of 'held-out scene', 'upload'"),
        ({"budget": None}, "split among the modalities None; expected one of 'Dirichlet draw', 'fixed counts'"),
        ({"alphas": "1, x"}, "Dirichlet alphas '1, x'; expected numbers separated by commas"),
        ({"alphas": "1, 2"}, "Dirichlet alphas 1, 2; expected positive finite numbers, one or one per given modality (rgb, depth, semseg)"),
        ({"alphas": "inf"}, "Dirichlet alpha inf (of inf); expected positive finite numbers"),
        ({"alphas": "1, nan, 1"}, "Dirichlet alpha nan (of 1, nan, 1); expected positive finite numbers"),
        ({"alphas": "0"}, "Dirichlet alpha 0 (of 0); expected positive finite numbers"),
        ({"alphas": "-1"}, "Dirichlet alpha -1 (of -1); expected positive finite numbers"),
        ({"budget": FIXED, "counts": (5, 20, 1)}, "visible counts [5, 20, 1]; expected 3 (one per given modality"),
        ({"budget": FIXED, "counts": (5, None, 1)}, "depth visible tokens None; expected a whole number"),
        ({"left_options": "nois=0.5"}, "Key 'nois' not in 'AttentionOptions'. Did you mean: 'noise'?"),
        ({"left_options": "noise=2"}, "masking.attention.noise=2.0; expected a value in [0, 1]"),
        ({"left_options": 3}, "left options 3; expected text"),
        ({"right_options": "noise=0.5"}, "random has no options; got noise=0.5"),
        ({"right": "loss-memory"}, "remembers each training sample by its index"),
        ({"right": "attention-high (this run's)"}, 'unknown strategy "attention-high (this run\'s)"'),
    ],
)  # fmt: skip
def test_bad_settings_are_messages_naming_the_control(demo, changes, message):
    result = respond(demo, request(**changes))
    assert message in result.message and result.left is None


def test_strategies_are_offered_once_the_runs_own_marked(demo, checkpoint, tmp_path):
    assert {"random", "attention-high", "attention-low", "noise-0.5", "block"} <= set(demo.strategies)
    assert demo.labels["attention-high"] == "attention-high (this run's)"
    assert not any(row.startswith("this run") for row in demo.strategies)
    assert demo.default_sides == ("attention-high", "random")
    assert set(demo.excluded) == {"loss-memory", "cached-10", "predicted-loss", "scout"}
    assert demo.excluded["predicted-loss"] == (
        "learns during pretraining; only a checkpoint of a run that masked with it holds what it learned "
        "(this checkpoint's run masked with attention)"
    )
    # A run whose strategy is no row of the menu gets a row of its own, first.
    noisy = tmp_path / "noisy.pt"
    masking = MaskingConfig(strategy="attention", num_visible=VISIBLE)
    write_run_checkpoint(noisy, replace(masking, attention=replace(masking.attention, noise=0.3)))
    rows = list(Demo.load(str(noisy)).strategies)
    assert rows[0] == "this run: attention-high-noise0.3" and "attention-high" in rows


def test_an_official_file_opens_with_attention_high_against_random(tmp_path):
    official = tmp_path / "official.pth"
    torch.save({"model": MultiMAE(MultiMAEConfig(**TINY)).state_dict(), "epoch": 1599}, official)
    demo = Demo.load(str(official))
    assert demo.default_sides == ("attention-high", "random") and demo.labels["random"] == "random"
    assert "an official MultiMAE file holds none" in demo.excluded["predicted-loss"]
    assert demo.trained_on.startswith("32x32-pixel ImageNet-1K photos with pseudo-labelled depth")
    assert demo.class_names == []
    result = respond(demo, request(num_visible=10))
    assert "masked share (the budget: 0.7917) | 0.7917 | 0.7917 |" in result.summary


def test_the_default_scene_has_the_most_object_tokens_of_the_first_fifty(demo):
    shown = demo.default_scene()
    objects = [demo.object_tokens(demo.scene(n).tensors["semseg"][None]).sum().item() for n in range(50)]
    assert objects[shown] == max(objects) > 0 and shown == objects.index(max(objects))


def test_a_run_trained_on_a_folder_opens_on_the_held_out_scenes_and_their_objects(tmp_path):
    """The held-out scenes are synthetic whatever the run trained on: their object classes are the scenes'
    (a folder of images names none)."""
    config = PretrainConfig(
        model=ModelSettings(**TINY),
        masking=MaskingConfig(strategy="attention", num_visible=VISIBLE),
        data=DataConfig(source="folder", root=str(tmp_path), augment=AugmentConfig(size=32)),
    )
    model = MultiMAE(config.model.architecture(config.modalities))
    torch.save({"model": model.state_dict(), "config": config_to_dict(config)}, tmp_path / "checkpoint.pt")
    demo = Demo.load(str(tmp_path / "checkpoint.pt"))
    semseg = demo.scene(SCENE_WITH_OBJECTS).tensors["semseg"][None]
    assert demo.object_tokens(semseg).sum().item() == 3 and demo.default_scene() < 50


def test_pseudo_labels_fill_in_what_an_upload_lacks(checkpoint, images, pseudolabel_models):
    demo = Demo.load(str(checkpoint), pseudolabel_models)
    photo = uploads(images, rgb="photo.png")
    assert set(demo.upload(photo).tensors) == {"rgb"}
    image = demo.upload(photo, pseudo_label=True)
    assert set(image.tensors) == {"rgb", "depth", "semseg"} and image.tensors["semseg"].shape == (8, 8)
    assert image.label == "rgb: photo.png, depth: pseudo label, semseg: pseudo label"
    side = demo.compare(
        image, Budget(VISIBLE), StrategyChoice("attention-high"), StrategyChoice("random")
    ).sides[0]
    assert sum(side.visible.values()) == VISIBLE and len(side.visible) == 3
    message = respond(
        demo, request(source=UPLOAD, uploads=uploads(images, depth="depth.png"), pseudo_label=True)
    )
    assert "pseudo labels (semseg) are predicted from rgb; upload an rgb image" in message.message


def test_the_command_fails_in_one_line_before_serving(tmp_path, capsys, monkeypatch, demo):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    assert main(["ui", str(broken)]) == 1
    assert f"guidedmae ui: error: {broken}" in capsys.readouterr().err
    run = tmp_path / "run.pt"
    write_run_checkpoint(run, MaskingConfig(num_visible=VISIBLE))
    assert main(["ui", str(run), "--pseudolabel-depth", str(tmp_path / "nowhere")]) == 1
    assert f"--pseudolabel-depth {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err
    assert main(["ui", str(run), "--threads", "100000"]) == 1
    error = capsys.readouterr().err
    assert error == (
        f"guidedmae ui: error: --threads 100000; expected 0 (the run's run.threads, else torch's) or "
        f"1..{os.cpu_count()} (this machine's CPUs)\n"
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(
            ValueError,
            match=rf"^--port {port}: cannot listen at 127.0.0.1:{port} \(the port is in use, .*\); choose another port with --port$",
        ):
            serve(demo, "127.0.0.1", port, block=False)
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if not installed
    assert main(["ui", str(broken)]) == 1
    assert "guidedmae ui needs gradio: pip install 'guidedmae[ui]'" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ctrl_c_stops_the_command_with_its_own_line_and_removes_its_files(checkpoint, tmp_path):
    pytest.importorskip("gradio", reason="gradio is the ui extra: pip install 'guidedmae[ui]'")
    environment = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(SRC)}
    command = [sys.executable, "-m", "guidedmae", "ui", str(checkpoint), "--port", str(_free_port())]
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )
    assert server.stdout.readline().startswith(f"guidedmae ui: serving {checkpoint} at http://127.0.0.1:")
    assert [path.name[:13] for path in tmp_path.iterdir()] == ["guidedmae-ui-"]  # the server's own folder
    server.send_signal(signal.SIGINT)
    out, err = server.communicate(timeout=60)
    assert (server.returncode, out, err) == (0, "guidedmae ui: stopped\n", "")
    assert list(tmp_path.iterdir()) == []


def test_the_http_api_answers_bad_values_with_messages_and_keeps_no_file(demo, images, tmp_path, monkeypatch):
    pytest.importorskip("gradio", reason="gradio is the ui extra: pip install 'guidedmae[ui]'")
    from gradio_client import Client, handle_file

    from tests.test_reliability_interpolation import api_arguments

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    port = _free_port()
    server = serve(demo, "127.0.0.1", port, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        for value, shown in ((None, "None"), ("abc", "'abc'")):
            message = client.predict(*api_arguments(demo, request(num_visible=value)), api_name="/compute")[
                -1
            ]
            assert message == f"**Cannot compare:** visible tokens {shown}; expected a whole number"
        # An upload through the API: read once, kept in the client's session, its server copy gone.
        assert client.predict(handle_file(images / "photo.png"), api_name="/upload_rgb")[-1] == ""
        assert not list((tmp_path / "gradio").rglob("photo.png"))
        summary = client.predict(
            *api_arguments(demo, request(source=UPLOAD, num_visible=3)), api_name="/compute"
        )
        assert "| rgb: photo.png | left: attention-high | right: random |" in summary[-2]
        for _ in range(5):
            client.predict(*api_arguments(demo, request()), api_name="/compute")
        # Pictures go inline: nothing but Gradio's empty placeholders is left on disk.
        assert [
            path for path in (tmp_path / "gradio").rglob("*") if path.is_file() and path.stat().st_size
        ] == []
    finally:
        server.close()


def _summary_shows(page, text: str) -> None:
    page.wait_for_function(
        "text => { const s = document.querySelector('#summary'); return s && s.innerText.includes(text); }",
        arg=text,
        timeout=60_000,
    )


def _shown(page, side: str) -> np.ndarray:
    """The pixels of one side's picture as the page shows it."""
    source = page.get_attribute(f"#{side}-figure img", "src")
    return np.asarray(Image.open(BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("RGB"))


def _assert_pictures(page, comparison) -> None:
    for side, name in zip(comparison.sides, ("left", "right")):
        assert page.get_attribute(f"#{name}-figure img", "alt") == f"{name}: {side.strategy}"
        assert np.array_equal(_shown(page, name), np.asarray(side.figure)), name


def _choose(page, control: str, option: str) -> None:
    menu = page.get_by_label(control)
    menu.click()
    options = page.locator(f"#{menu.get_attribute('aria-controls')}")
    options.get_by_role("option", name=option, exact=True).click()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")
def test_the_page_in_a_browser(demo, images):
    pytest.importorskip("gradio", reason="gradio is the ui extra: pip install 'guidedmae[ui]'")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright drives the browser")

    port, first = _free_port(), demo.default_scene()
    server = serve(demo, "127.0.0.1", port, block=False)
    try:
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            # Opening: a scene with objects, attention-high against random, both pictures on the first screen.
            _summary_shows(page, f"held-out scene {first}")
            opened = demo.compare(
                demo.scene(first), Budget(VISIBLE), StrategyChoice("attention-high"), StrategyChoice("random")
            )
            _assert_pictures(page, opened)
            for side in ("left", "right"):
                box = page.locator(f"#{side}-figure img").bounding_box()
                assert box["y"] + box["height"] <= 900 and box["width"] == opened.sides[0].figure.width
            assert not page.locator("#file-rgb").is_hidden() and page.locator("#preview-rgb img").count() == 0

            # Each side's options act on its own side.
            page.fill("#scene input", "3")
            _choose(page, "left strategy", "attention-low")
            _choose(page, "right strategy", "noise-0.5")
            page.fill("#right-options textarea, #right-options input", "noise=0.2")
            page.click("#compare")
            _summary_shows(page, "held-out scene 3")
            expected = demo.compare(demo.scene(3), Budget(VISIBLE), StrategyChoice("attention-low"),
                                    StrategyChoice("noise-0.5", ("noise=0.2",)))  # fmt: skip
            _assert_pictures(page, expected)

            # A bad option: a message; the next comparison clears it.
            page.fill("#left-options textarea, #left-options input", "noise=2")
            page.click("#compare")
            page.wait_for_selector("#message :text('masking.attention.noise=2.0')", timeout=60_000)
            page.fill("#left-options textarea, #left-options input", "")
            page.click("#compare")
            page.wait_for_function(
                "() => !document.querySelector('#message').innerText.includes('noise=2.0')"
            )

            # A dropped rgb photo switches the source, is previewed, and the budget follows it (16 tokens).
            page.set_input_files("#file-rgb input[type=file]", str(images / "photo.png"))
            page.wait_for_selector("#preview-rgb img[alt='rgb: photo.png']", timeout=60_000)
            assert page.get_by_label(UPLOAD, exact=True).is_checked() and page.locator("#scene").is_hidden()
            assert page.input_value("#num-visible input[type=number]") == "3"
            assert "visible tokens of the 16 of rgb" in page.inner_text("#num-visible")
            page.click("#compare")
            _summary_shows(page, "rgb: photo.png")
            photo = demo.upload(uploads(images, rgb="photo.png"))
            _assert_pictures(page, demo.compare(photo, Budget(3), StrategyChoice("attention-low"),
                                                StrategyChoice("noise-0.5", ("noise=0.2",))))  # fmt: skip

            # Replaced in one step; a depth map of its size reaches the depth row.
            page.set_input_files("#file-rgb input[type=file]", str(images / "other.png"))
            page.wait_for_selector("#preview-rgb img[alt='rgb: other.png']", timeout=60_000)
            page.set_input_files("#file-depth input[type=file]", str(images / "depth.png"))
            page.wait_for_selector("#preview-depth img", timeout=60_000)
            assert page.input_value("#num-visible input[type=number]") == "5"  # 8/48 of 32
            page.click("#compare")
            _summary_shows(page, "rgb: other.png, depth: depth.png")
            both = demo.upload(uploads(images, rgb="other.png", depth="depth.png"))
            _assert_pictures(page, demo.compare(both, Budget(5), StrategyChoice("attention-low"),
                                                StrategyChoice("noise-0.5", ("noise=0.2",))))  # fmt: skip

            # Fixed counts: a slider per given modality, the total follows them and cannot be moved.
            page.get_by_label(FIXED, exact=True).check()
            page.wait_for_selector("#count-depth", state="visible")
            assert page.locator("#count-semseg").is_hidden() and page.locator("#alphas").is_hidden()
            assert page.locator("#num-visible input[type=range]").is_disabled()
            page.fill("#count-rgb input[type=number]", "4")
            page.press("#count-rgb input[type=number]", "Enter")
            page.fill("#count-depth input[type=number]", "1")
            page.press("#count-depth input[type=number]", "Enter")
            page.wait_for_function(
                "() => document.querySelector('#num-visible input[type=number]').value === '5'"
            )
            page.click("#compare")
            _summary_shows(page, "rgb 4, depth 1")

            # A file that is no image: a message, the uploads kept.
            page.set_input_files("#file-depth input[type=file]", str(images / "notes.txt"))
            page.wait_for_selector("#message :text('Cannot take the depth file')", timeout=60_000)
            assert page.locator("#preview-depth img[alt='depth: depth.png']").count() == 1
            # Removing the depth map: rgb alone again, its budget back.
            page.click("#remove-depth")
            page.wait_for_selector("#preview-depth img", state="detached")
            assert page.input_value("#num-visible input[type=number]") == "3"

            # Back to scenes: the across-scenes panel answers over many.
            page.get_by_label(SCENE, exact=True).check()
            page.get_by_label(DIRICHLET, exact=True).check()
            page.wait_for_selector("#compare-across", state="visible")
            page.fill("#scenes input", "20")
            page.click("#compare-across")
            page.wait_for_selector("#across-table :text('Over held-out scenes 0..19')", timeout=60_000)
            table = across_scenes(demo, Budget(VISIBLE), StrategyChoice("attention-low"),
                                  StrategyChoice("noise-0.5", ("noise=0.2",)), 20)  # fmt: skip
            for name in ("left: masked tokens on objects", "premise, rgb: most attended tokens on objects"):
                cells = page.locator("#across-table tr", has_text=name).inner_text().split("\t")
                assert cells[:2] == [name, f"{table.rows[name].mean:.3f}"]
            assert "(left: attention-low, right: attention-high-noise0.2)" in page.inner_text("#across-table")
            browser.close()
    finally:
        server.close()
