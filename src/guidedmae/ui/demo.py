"""What the `guidedmae ui` page computes, without the page: one image, two masking strategies on one budget
-> pictures and numbers.

    demo = Demo.load("runs/demo/checkpoint-last.pt")
    image = demo.scene(14)                         # or demo.upload({"rgb": "photo.jpg"}), depth/semseg optional
    comparison = demo.compare(image, Budget(num_visible=32), StrategyChoice("attention-high"),
                              StrategyChoice("random"))
    comparison.sides[0].figure, comparison.sides[0].masked_share, comparison.premise

Every step is the training code's: the held-out data's reading and centre crop (data.folder,
data.transforms), the Dirichlet budget (drawn once, then shared by both strategies), the strategies'
modules (bench's variants), MaskedAutoencoderStep's forward pass, the pictures module's panels, and the premise
as pretraining's evaluation measures it. `guidedmae.ui.scenes` measures the same over many held-out scenes.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from PIL import Image

from guidedmae.config import PretrainConfig, config_to_dict, load_config
from guidedmae.data.datasets import SizedDataset, check_class_maps
from guidedmae.data.folder import read_sample
from guidedmae.data.pseudolabel import Labeller, model_folder
from guidedmae.data.transforms import augment_sample
from guidedmae.engine.from_checkpoint import load_model, load_strategy_state
from guidedmae.engine.premise import object_class_ids, scene_object_tokens
from guidedmae.engine.pretrain import STRATEGY_KEY, data_modalities, pretraining_set
from guidedmae.engine.pretrain_step import MaskedAutoencoderStep
from guidedmae.infra.distributed import resolve_device
from guidedmae.masking import (
    STRATEGIES,
    MaskingConfig,
    MaskingStrategy,
    build_strategy,
    sample_visible_counts,
)
from guidedmae.masking.budget import FixedBudget
from guidedmae.masking.strategy import MaskChoice
from guidedmae.metrics import top_attended_object_share
from guidedmae.models.multimae import MultiMAE, Tokens
from guidedmae.ui.checkpoint import class_names, strategy_menu, trained_on
from guidedmae.ui.figure import side_figure
from guidedmae.ui.uploads import Upload, read_upload

__all__ = ["SCENES", "Budget", "Comparison", "Demo", "DemoImage", "Side", "StrategyChoice"]

SCENES = 10_000  # scene numbers offered: scenes render on demand, so the count costs nothing
DEFAULT_SIDES = ("attention-high", "random")  # what the page opens with: the method against its baseline


@dataclass
class Budget:
    """How many tokens the encoder sees, per given modality: a Dirichlet draw, or fixed counts."""

    num_visible: int  # over all given modalities (with counts: their sum)
    alphas: tuple[float, ...] = (1.0,)  # Dirichlet concentration: one (symmetric) or one per given modality
    counts: tuple[int, ...] = ()  # fixed visible tokens per given modality (model input order); () = draw
    seed: int = 0  # the Dirichlet draw and each strategy's random draws


@dataclass
class StrategyChoice:
    """One side of the comparison: a row of Demo.strategies, and options over the row's."""

    row: str  # e.g. attention-high, noise-0.5, random, block2
    options: tuple[str, ...] = ()  # key=value of the strategy's section (masking.<strategy>), e.g. noise=0.25


@dataclass
class DemoImage:
    """One sample, model-ready and without batch dimension: the modalities given."""

    tensors: dict[
        str, torch.Tensor
    ]  # rgb [3, S, S] normalized, depth [1, S, S] standardized, semseg [S/4, S/4]
    scene: bool  # a synthetic scene: its semseg holds the scene classes, so the premise is measured
    label: str  # what it is, for the page


@dataclass
class Side:
    """What one strategy did to the image."""

    strategy: str  # the strategy as it describes itself: attention-low-noise0.25
    figure: Image.Image  # the picture grid: input | scores | masked input | prediction | prediction + visible
    visible: dict[str, int]  # visible tokens per given modality
    masked_share: float  # masked tokens / tokens of the given modalities
    object_share: dict[str, float]  # scenes: per modality, the share of its masked tokens on objects
    masks: dict[str, torch.Tensor]  # {given modality: [N] bool, True = masked}


@dataclass
class Comparison:
    sides: tuple[Side, Side]
    budget_share: float  # 1 - visible / tokens: the share of tokens every strategy must mask
    # Scenes: per modality, the share of its R most attended tokens on objects (R = object tokens), and
    # "chance": the objects' share of the tokens. pretraining's premise/<modality> for one image.
    premise: dict[str, float]


class Demo:
    """A checkpoint's model and the strategies it can be shown with (see the module docstring)."""

    def __init__(
        self,
        model: MultiMAE,
        config: PretrainConfig,
        checkpoint: dict,
        path: str,
        labellers: Mapping[str, Labeller] | None = None,
    ) -> None:
        """labellers: {modality: pseudo-label model} that fill in modalities an upload comes without."""
        self.model, self.config, self.path = model.eval(), config, path
        official = not isinstance(checkpoint.get("config"), dict)
        # What learned strategies' states are checked against and loaded from, without a second copy
        # of the model's weights.
        self.checkpoint = {key: checkpoint[key] for key in ("config", STRATEGY_KEY) if key in checkpoint}
        self.labellers = dict(labellers or {})
        self.trained_on = trained_on(config, official)
        self.class_names = class_names(config, official)
        # The strategies offered ({row: config}), their menu texts, and those not offered with the reason.
        menu = strategy_menu(config, model, self.checkpoint, path)
        self.strategies, self.labels, self.excluded = menu.strategies, menu.labels, menu.excluded
        self._scenes: SizedDataset | None = None

    @classmethod
    def load(
        cls, path: str, pseudolabel_models: Mapping[str, str] | None = None, device: str = "cpu"
    ) -> "Demo":
        """The demo of a pretraining checkpoint or an official MultiMAE file; pseudolabel_models:
        {"depth" | "semseg": a transformers model folder}. Raises naming what does not load."""
        resolved = resolve_device(device, key="--device")
        model, config, checkpoint = load_model(path)
        labellers = {
            task: Labeller(model_folder(folder, f"--pseudolabel-{task}"), task, resolved)
            for task, folder in (pseudolabel_models or {}).items()
        }
        return cls(model.to(resolved), config, checkpoint, str(path), labellers)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def tokens_per_modality(self) -> int:
        return self.model.config.tokens_per_modality

    @property
    def default_sides(self) -> tuple[str, str]:
        """The rows the page opens with: attention-high against random where both are offered."""
        rows = list(self.strategies)
        left, right = (row if row in self.strategies else rows[0] for row in DEFAULT_SIDES)
        return left, right

    def default_visible(self, given: int) -> int:
        """Visible tokens over `given` modalities that keep the masked share the checkpoint trained with."""
        share = self.config.masking.num_visible / (len(self.model.config.inputs) * self.tokens_per_modality)
        return round(share * given * self.tokens_per_modality)

    # -- images ---------------------------------------------------------------------------------------

    def scene(self, number: int) -> DemoImage:
        """Held-out synthetic scene `number` (eval.scene_seed's series, which no training run saw), centre
        crop at the model's size, as pretraining's evaluation reads it."""
        if not 0 <= number < SCENES:
            raise ValueError(f"scene {number}; expected a scene number 0..{SCENES - 1}")
        if self._scenes is None:
            self._scenes = pretraining_set(self._scenes_config(), held_out=True)
        sample = self._scenes[number]
        tensors = {modality.name: sample[modality.name] for modality in data_modalities(self.model.config)}
        return DemoImage(tensors, scene=True, label=f"held-out scene {number}")

    def _scenes_config(self) -> PretrainConfig:
        """The run's config reading the held-out synthetic scenes, whatever data the run trained on."""
        return replace(
            self.config,
            data=replace(self.config.data, source="synthetic", root="", split="train"),
            eval=replace(self.config.eval, num_samples=SCENES),
        )

    def object_tokens(self, semseg: torch.Tensor) -> torch.Tensor:
        """Which tokens of held-out scenes lie on objects: semseg [B, S/4, S/4] scene classes -> [B, N] bool."""
        side = self.model.config.grid_side
        # The scenes' object classes, not those of the data the run trained on (a folder names none).
        classes = object_class_ids(self._scenes_config())
        if classes is None:
            raise ValueError("the model neither reads nor predicts semseg: the scenes' objects are unknown")
        return scene_object_tokens(semseg, (side, side), classes)

    def default_scene(self, candidates: int = 50) -> int:
        """The held-out scene, of the first `candidates`, whose objects cover the most tokens (the first such):
        a picture where the question of the page, are objects masked, can be seen."""
        if "semseg" not in self.model.config.inputs:
            return 0
        semseg = torch.stack([self.scene(number).tensors["semseg"] for number in range(candidates)])
        return int(self.object_tokens(semseg).sum(dim=1).argmax())

    def upload(
        self, files: Mapping[str, Upload | str | Path | None], pseudo_label: bool = False
    ) -> DemoImage:
        """An image of the user's: files {modality: an Upload or a file's path} (any of the model's inputs;
        None = not given), read as the folder data sets read theirs; pseudo_label: the labellers fill in
        what is not given, from the rgb image."""
        inputs = self.model.config.inputs
        given = {name: file for name, file in files.items() if file}
        unknown = sorted(set(given) - set(inputs))
        if unknown or not given:
            raise ValueError(
                f"files given for {unknown or 'no modality'}; expected an image for at least one of the "
                f"model's inputs ({', '.join(inputs)})"
            )
        uploads = {
            name: file if isinstance(file, Upload) else read_upload(file, name)
            for name, file in given.items()
        }
        # Messages name the user's file, not the server's copy of it.
        names = {name: Path(upload.name) for name, upload in uploads.items()}
        data = {name: upload.data for name, upload in uploads.items()}
        arrays = read_sample(names, self.model.modalities, data)
        filled = (
            [name for name in self.labellers if name in inputs and name not in arrays] if pseudo_label else []
        )
        if filled and "rgb" not in arrays:
            raise ValueError(
                f"pseudo labels ({', '.join(filled)}) are predicted from rgb; upload an rgb image"
            )
        for name in filled:
            arrays[name] = self.labellers[name]([Image.fromarray(arrays["rgb"])])[0]
            names[name] = Path(f"{name} pseudo label of {names['rgb']}")
        modalities = {name: self.model.modalities[name] for name in arrays}
        check_class_maps(arrays, names, modalities, self.model.config.semseg_classes, None)
        augment = replace(self.config.data.augment, train=False)
        tensors = augment_sample(arrays, augment, torch.Generator(), modalities)
        label = ", ".join(f"{name}: {names[name].name}" for name in given) + "".join(
            f", {name}: pseudo label" for name in filled
        )
        return DemoImage({name: tensors[name] for name in modalities}, scene=False, label=label)

    # -- the comparison -------------------------------------------------------------------------------

    def strategy(self, choice: StrategyChoice) -> MaskingStrategy:
        """The strategy of one side: its row, then its options (checked as a config's), with the trained
        state the checkpoint holds for it where it learns."""
        if choice.row not in self.strategies:
            reason = self.excluded.get(choice.row)
            raise ValueError(
                f"strategy {choice.row!r}: {reason}"
                if reason
                else f"unknown strategy {choice.row!r}; expected one of {list(self.strategies)}"
            )
        masking = self.strategies[choice.row]
        if choice.options:
            section = STRATEGIES[masking.strategy].options_class
            if not fields(section):
                raise ValueError(f"{choice.row} has no options; got {' '.join(choice.options)}")
            keys = ", ".join(field.name for field in fields(section))
            overrides = [f"{masking.strategy}.{option}" for option in choice.options]
            try:
                masking = load_config(MaskingConfig, None, overrides, base=config_to_dict(masking))
                strategy = build_strategy(masking, self.model.config, 1)
            except ValueError as error:
                raise ValueError(
                    f"{choice.row} options {' '.join(choice.options)}: {error} (its keys: {keys})"
                ) from error
        else:
            strategy = build_strategy(masking, self.model.config, 1)
        if strategy.state_dict():
            load_strategy_state(strategy, self.checkpoint, self.path)
        return strategy.to(self.device)

    def visible_counts(self, budget: Budget, modalities: list[str], images: int = 1) -> torch.Tensor:
        """[images, M] visible tokens per image and given modality: the fixed counts, or the seed's
        Dirichlet draws (one per image)."""
        per_modality, listed = self.tokens_per_modality, ", ".join(modalities)
        if not 0 <= budget.seed < 2**63:
            raise ValueError(f"seed {budget.seed}; expected a whole number 0..2^63-1")
        if budget.counts:
            if len(budget.counts) != len(modalities) or not all(
                0 <= c <= per_modality for c in budget.counts
            ):
                raise ValueError(
                    f"visible counts {list(budget.counts)}; expected {len(modalities)} (one per given "
                    f"modality: {listed}), each 0..{per_modality}"
                )
            return torch.tensor([budget.counts], dtype=torch.long).expand(images, -1)
        total = per_modality * len(modalities)
        if not 0 <= budget.num_visible <= total:
            raise ValueError(
                f"{budget.num_visible} visible tokens; expected 0..{total} (the tokens of the given modalities: {listed})"
            )
        expected = f"expected positive finite numbers, one or one per given modality ({listed})"
        for alpha in budget.alphas:
            if not (math.isfinite(alpha) and alpha > 0):
                raise ValueError(
                    f"Dirichlet alpha {alpha:g} (of {', '.join(f'{a:g}' for a in budget.alphas)}); {expected}"
                )
        if len(budget.alphas) not in (1, len(modalities)):
            raise ValueError(f"Dirichlet alphas {', '.join(f'{a:g}' for a in budget.alphas)}; {expected}")
        generator = torch.Generator().manual_seed(budget.seed)
        return sample_visible_counts(
            images, [per_modality] * len(modalities), budget.num_visible, budget.alphas, generator=generator
        )

    def choose(
        self, strategy: MaskingStrategy, tokens: Tokens, counts: torch.Tensor, seed: int
    ) -> MaskChoice:
        """The masks `strategy` chooses for tokens [B, ...] with visible counts [B, M], its randomness from
        `seed`: both sides of a comparison get the same counts and seed."""
        strategy.budget = FixedBudget(strategy.masking, tokens.modalities, counts)
        return strategy(self.model, tokens, torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def compare(
        self, image: DemoImage, budget: Budget, left: StrategyChoice, right: StrategyChoice
    ) -> Comparison:
        """Both strategies on the same image with the same visible counts and seed."""
        modalities = [name for name in self.model.config.inputs if name in image.tensors]
        strategies = [self.strategy(left), self.strategy(right)]  # both checked before anything runs
        counts = self.visible_counts(budget, modalities)
        batch = {name: value[None].to(self.device) for name, value in image.tensors.items()}
        tokens = self.model.tokenize({name: batch[name] for name in modalities})
        attention = self.model.attention_scores(tokens)  # {modality: [1, N]}
        on_object = self.object_tokens(batch["semseg"])[0] if image.scene and "semseg" in batch else None
        left_side, right_side = (
            self._side(batch, strategy, counts, budget.seed, attention, on_object) for strategy in strategies
        )
        premise = {}
        if on_object is not None:
            premise = {
                name: top_attended_object_share(scores.float(), on_object[None]).item()
                for name, scores in attention.items()
            }
            premise["chance"] = on_object.double().mean().item()
        return Comparison(
            (left_side, right_side),
            1 - counts.sum().item() / (len(modalities) * self.tokens_per_modality),
            premise,
        )

    def _side(
        self,
        batch: dict[str, torch.Tensor],
        strategy: MaskingStrategy,
        counts: torch.Tensor,
        seed: int,
        attention: dict[str, torch.Tensor],
        on_object: torch.Tensor | None,
    ) -> Side:
        # The budget was drawn once for both sides: the strategies differ only in which tokens they hide.
        modalities = [name for name in self.model.config.inputs if name in batch]
        strategy.budget = FixedBudget(strategy.masking, modalities, counts)
        step = MaskedAutoencoderStep(self.model, strategy, self.config.loss).eval()
        _, choice, preds = step.reconstruct(batch, torch.Generator().manual_seed(seed))
        masks = {name: mask[0] for name, mask in choice.selection.masks.items()}  # {modality: [N] bool}
        label = strategy.score_label
        if choice.scores is None:  # random and block masking score nothing: show what attention would pick
            choice, label = replace(choice, scores=attention), "attention (unused)"
        figure = side_figure(
            batch, choice, preds, self.model.config.patch_size, label, self.model.modalities, self.class_names
        )
        object_share = {}
        if on_object is not None:
            object_share = {
                name: ((mask & on_object).sum() / mask.sum()).item() if mask.any() else float("nan")
                for name, mask in masks.items()
            }
        masked = sum(int(mask.sum()) for mask in masks.values())
        return Side(
            strategy=strategy.describe(),
            figure=figure,
            visible={name: int((~mask).sum()) for name, mask in masks.items()},
            masked_share=masked / sum(mask.numel() for mask in masks.values()),
            object_share=object_share,
            masks=masks,
        )
