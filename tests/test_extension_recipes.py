"""The recipes of docs/development.md, each followed inside a test: a masking strategy, a fine-tuning task
and a data source are added as the page says (one class or function, registered) and run end to end. (A
modality needs no code: tests/test_modalities.py declares a two-channel one and trains with it.)"""

import json

import numpy as np
import pytest
import torch

from guidedmae.cli import main
from guidedmae.config import FinetuneConfig, PretrainConfig, load_config
from guidedmae.data.datasets import AugmentedDataset
from guidedmae.data.modalities import resolve
from guidedmae.data.sources import SOURCES, Source
from guidedmae.engine.finetune import finetune
from guidedmae.infra.run_log import read_metrics
from guidedmae.masking import STRATEGIES, MaskingContext, MaskingStrategy, Proposal, register
from guidedmae.tasks import TASKS, Task, TaskConfig, register_task
from tests.test_finetune import SMALL_RUN
from tests.test_pretrain import tiny_config


@pytest.fixture
def registries():
    """Whatever a test registers is gone after it."""
    before = {
        registry_id: dict(registry) for registry_id, registry in enumerate((STRATEGIES, TASKS, SOURCES))
    }
    yield
    for registry_id, registry in enumerate((STRATEGIES, TASKS, SOURCES)):
        registry.clear()
        registry.update(before[registry_id])


def test_a_strategy_is_one_class_registered_by_name(tmp_path, registries):
    @register("top_rows_first")
    class TopRowsFirst(MaskingStrategy):
        """Hides the tokens of the first rows first, in every modality."""

        def propose(self, context: MaskingContext) -> Proposal:
            tokens = context.tokens
            order = torch.arange(tokens.tokens_per_modality, 0, -1, dtype=torch.float32)
            batch = tokens.embeddings.shape[0]
            return Proposal({name: order.expand(batch, -1).clone() for name in tokens.modalities})

    out = tmp_path / "run"
    overrides = [f"out_dir={out}", "masking.strategy=top_rows_first", "schedule.total_epochs=1"]
    assert main(["pretrain", str(tiny_config(tmp_path)), *overrides]) == 0
    results = json.loads((out / "results.json").read_text())
    assert np.isfinite(results["metrics"]["eval_own/loss"])
    # Its masks: the visible tokens of every modality are the last ones of the grid.
    config = load_config(PretrainConfig, out / "config.yaml")
    strategy = TopRowsFirst(config.masking, config.model)
    from guidedmae.models import MultiMAE

    model = MultiMAE(config.model.architecture(config.modalities))
    inputs = {
        "rgb": torch.zeros(2, 3, 32, 32),
        "depth": torch.zeros(2, 1, 32, 32),
        "semseg": torch.zeros(2, 8, 8).long(),
    }
    choice = strategy(model, model.tokenize(inputs), torch.Generator().manual_seed(0))
    for mask in choice.selection.masks.values():  # [B, 16]
        for row in mask:
            visible = (~row).nonzero()[:, 0].tolist()
            assert visible == list(range(16 - len(visible), 16))


class MeanSquaredErrorMeter:
    """Squared error summed over pixels: totals = [pixels, sum]."""

    def __init__(self, device="cpu"):
        self.totals = torch.zeros(2, dtype=torch.float64, device=device)

    def update(self, output, target):
        self.totals += torch.stack(
            [torch.tensor(float(target.numel())), (output - target).square().sum().double().cpu()]
        )

    def compute(self):
        return {"mse": (self.totals[1] / self.totals[0].clamp_min(1)).item()}


def test_a_task_is_one_class_registered_by_name(tmp_path, registries):
    @register_task
    class DepthMSE(Task):
        """Depth as plain regression of the standardized map, scored by its mean squared error."""

        name = "depth_mse"
        target_key = "depth"
        dense = True
        head_kinds = ("linear",)

        def out_channels(self, num_classes: int) -> int:
            return 1

        def loss(self, output, target, config: TaskConfig, label_smoothing: float = 0.0):
            return (output.float() - target).square().mean()

        def meter(self, num_classes: int, config: TaskConfig, device="cpu"):
            return MeanSquaredErrorMeter(device)

    config = load_config(
        FinetuneConfig,
        None,
        [f"out_dir={tmp_path / 'run'}", *SMALL_RUN, "head.task=depth_mse", "optim.lr=1e-3"],
    )
    result = finetune(config)
    assert result.scores["task"] == "depth_mse" and result.scores["metrics"]["mse"] > 0
    weights = torch.load(result.checkpoint, weights_only=True)["model"]
    assert weights["head.classifier.weight"].shape[:2] == (1, 32)  # the task's one channel, a linear head
    with pytest.raises(
        ValueError, match=r"head.kind='dpt' for task depth_mse; expected one of \('linear',\)"
    ):
        load_config(FinetuneConfig, None, [*SMALL_RUN, "head.task=depth_mse", "head.kind=dpt"])


class ArchiveDataset(AugmentedDataset):
    """Samples of one .npz archive holding rgb [N, H, W, 3] uint8, depth [N, H, W] metres and semseg
    [N, H, W] class ids."""

    def __init__(self, path, modalities, augment, seed):
        super().__init__(augment, seed)
        self.arrays = dict(np.load(path))
        self.modalities = resolve(modalities)

    def load(self, index: int) -> dict:
        return {name: self.arrays[name][index] for name in self.modalities}

    def __len__(self) -> int:
        return len(self.arrays["rgb"])


def test_a_data_source_is_one_function_registered_by_name(tmp_path, registries):
    SOURCES["archive"] = Source(
        lambda request: ArchiveDataset(request.data.root, request.modalities, request.augment, request.seed),
        modalities=("rgb", "depth", "semseg"),
    )
    rng = np.random.default_rng(0)
    archive = tmp_path / "scenes.npz"
    np.savez(
        archive,
        rgb=rng.integers(0, 256, (24, 40, 40, 3), dtype=np.uint8),
        depth=rng.uniform(0.5, 5, (24, 40, 40)).astype(np.float32),
        semseg=rng.integers(0, 8, (24, 40, 40), dtype=np.uint8),
    )
    out = tmp_path / "run"
    overrides = [f"out_dir={out}", "data.source=archive", f"data.root={archive}", "data.num_samples=24",
                 "schedule.total_epochs=1", "eval.num_samples=0"]  # fmt: skip
    assert main(["pretrain", str(tiny_config(tmp_path)), *overrides]) == 0
    start = next(r for r in read_metrics(out / "metrics.jsonl") if r.get("event") == "start")
    assert start["steps"] == 3  # 24 samples in batches of 8
    # What the source does not give is refused when the config is loaded.
    with pytest.raises(ValueError, match="data.source=archive has no normals"):
        load_config(PretrainConfig, tiny_config(tmp_path), [*overrides, "model.inputs=[rgb,normals]"])
