"""What the `guidedmae ui` page computes, without the page: one image, two masking strategies on one budget
-> pictures and numbers.

    demo = Demo.load("runs/demo/checkpoint-last.pt")
    image = demo.scene(7)                          # or demo.upload({"rgb": "photo.jpg"}), depth/semseg optional
    comparison = demo.compare(image, Budget(num_visible=32), StrategyChoice("attention-high"),
                              StrategyChoice("random"))
    comparison.sides[0].figure, comparison.sides[0].masked_share, comparison.premise

Every step is the training code's: the held-out data's reading and centre crop (data.folder,
data.transforms), the Dirichlet budget (drawn once, then shared by both strategies), the strategies'
modules (bench's variants), MaskedAutoencoderStep's forward pass, the pictures module's figure, and the premise as
pretraining's evaluation measures it.
"""

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from PIL import Image

from guidedmae.config import PretrainConfig, config_to_dict, load_config
from guidedmae.data.datasets import check_class_maps
from guidedmae.data.folder import IMAGE_ERRORS, read_sample
from guidedmae.data.pseudolabel import Labeller, model_folder
from guidedmae.data.transforms import augment_sample
from guidedmae.engine.from_checkpoint import load_model, load_strategy_state
from guidedmae.engine.premise import object_class_ids, scene_object_tokens
from guidedmae.engine.pretrain import STRATEGY_KEY, pretraining_set
from guidedmae.engine.pretrain_step import MaskedAutoencoderStep
from guidedmae.infra.checkpoints import CheckpointError
from guidedmae.infra.distributed import resolve_device
from guidedmae.masking import (
    STRATEGIES,
    MaskingConfig,
    MaskingStrategy,
    build_strategy,
    sample_visible_counts,
    strategy_variants,
)
from guidedmae.masking.budget import FixedBudget
from guidedmae.masking.config import CurriculumConfig
from guidedmae.metrics import top_attended_object_share
from guidedmae.models.multimae import MultiMAE
from guidedmae.pictures import reconstruction_figure

__all__ = ["MAX_PIXELS", "SCENES", "Budget", "Comparison", "Demo", "DemoImage", "Side", "StrategyChoice"]

SCENES = 10_000  # scene numbers offered: scenes render on demand, so the count costs nothing
MAX_PIXELS = 25_000_000  # uploads above this are refused before decoding (25 MP of rgb: 75 MB of pixels)
RUN_PREFIX = "this run: "  # the menu row of the checkpoint's own strategy


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


@dataclass
class Comparison:
    sides: tuple[Side, Side]
    budget_share: float  # 1 - visible / tokens: the share of tokens every strategy must mask
    # Scenes: per modality, the share of its R most attended tokens on objects (R = object tokens), and
    # "chance": the objects' share of the tokens. pretraining's premise/<modality> for one image.
    premise: dict[str, float]


def _unavailable(masking: MaskingConfig, model: MultiMAE, checkpoint: dict, path: str) -> str | None:
    """Why a strategy cannot be shown on one image, or None when it can."""
    one, two = (build_strategy(masking, model.config, samples).state_dict() for samples in (1, 2))
    # A state that grows with the training set is a memory of its samples by index (loss memory, cached
    # attention): an image from elsewhere gets the strategy's fallback (random masking, exact attention).
    if any(one[key].shape != two[key].shape for key in one):
        return (
            "remembers each training sample by its index; an image outside the training set gets its fallback"
        )
    if one:
        try:
            load_strategy_state(build_strategy(masking, model.config, 1), checkpoint, path)
        except CheckpointError as error:
            return str(error)
    return None


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
        # What learned strategies' states are checked against and loaded from, without a second copy
        # of the model's weights.
        self.checkpoint = {key: checkpoint[key] for key in ("config", STRATEGY_KEY) if key in checkpoint}
        self.labellers = dict(labellers or {})
        rows = {}
        if isinstance(checkpoint.get("config"), dict):  # a run of ours, not an official file
            # Training-time wrappers stay out: a curriculum at step 0, or a share of images masked at
            # random, would hide the strategy itself.
            own = replace(config.masking, curriculum=CurriculumConfig(), random_images=0.0)
            rows[RUN_PREFIX + build_strategy(own, model.config, 1).describe()] = own
        rows.update(strategy_variants(MaskingConfig(), model.config))
        reasons = {row: _unavailable(masking, model, self.checkpoint, path) for row, masking in rows.items()}
        self.strategies = {row: masking for row, masking in rows.items() if reasons[row] is None}
        self.excluded = {row: reason for row, reason in reasons.items() if reason is not None}
        self._scenes = None

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
        return (self.model.config.image_size // self.model.config.patch_size) ** 2

    # -- images ---------------------------------------------------------------------------------------

    def scene(self, number: int) -> DemoImage:
        """Held-out synthetic scene `number` (eval.scene_seed's series, which no training run saw), centre
        crop at the model's size, as pretraining's evaluation reads it."""
        if not 0 <= number < SCENES:
            raise ValueError(f"scene {number}; expected a scene number 0..{SCENES - 1}")
        if self._scenes is None:
            synthetic = replace(
                self.config,
                data=replace(self.config.data, source="synthetic"),
                eval=replace(self.config.eval, num_samples=SCENES),
            )
            self._scenes = pretraining_set(synthetic, held_out=True)
        sample = self._scenes[number]
        tensors = {name: sample[name] for name in self._scenes.modalities}
        return DemoImage(tensors, scene=True, label=f"held-out scene {number}")

    def upload(self, files: Mapping[str, str | Path | None], pseudo_label: bool = False) -> DemoImage:
        """An image of the user's: files {modality: path} (any of the model's inputs; None = not given),
        read as the folder data sets read theirs; pseudo_label: the labellers fill in what is not given,
        from the rgb image."""
        inputs = self.model.config.inputs
        given = {name: Path(path) for name, path in files.items() if path}
        unknown = sorted(set(given) - set(inputs))
        if unknown or not given:
            raise ValueError(
                f"files given for {unknown or 'no modality'}; expected an image for at least one of the "
                f"model's inputs ({', '.join(inputs)})"
            )
        data = {name: _bounded_bytes(path, name) for name, path in given.items()}
        # Messages name the user's file, not the server's copy of it.
        names = {name: Path(path.name) for name, path in given.items()}
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

    def visible_counts(self, budget: Budget, modalities: list[str]) -> torch.Tensor:
        """[1, M] visible tokens per given modality: the fixed counts, or one Dirichlet draw of the seed."""
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
            return torch.tensor([budget.counts], dtype=torch.long)
        total = per_modality * len(modalities)
        if not 0 <= budget.num_visible <= total:
            raise ValueError(
                f"{budget.num_visible} visible tokens; expected 0..{total} (the tokens of the given modalities: {listed})"
            )
        if len(budget.alphas) not in (1, len(modalities)) or not all(alpha > 0 for alpha in budget.alphas):
            raise ValueError(
                f"Dirichlet alphas {list(budget.alphas)}; expected positive numbers, one or one per given "
                f"modality ({listed})"
            )
        generator = torch.Generator().manual_seed(budget.seed)
        return sample_visible_counts(
            1, [per_modality] * len(modalities), budget.num_visible, budget.alphas, generator=generator
        )

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
        on_object = None
        if image.scene and "semseg" in batch:
            on_object = scene_object_tokens(batch["semseg"], tokens.grid, object_class_ids(self.config))[0]
        sides = tuple(
            self._side(batch, strategy, modalities, counts, budget.seed, attention, on_object)
            for strategy in strategies
        )
        premise = {}
        if on_object is not None:
            premise = {
                name: top_attended_object_share(scores.float(), on_object[None]).item()
                for name, scores in attention.items()
            }
            premise["chance"] = on_object.double().mean().item()
        return Comparison(
            sides, 1 - counts.sum().item() / (len(modalities) * self.tokens_per_modality), premise
        )

    def _side(
        self,
        batch: dict[str, torch.Tensor],
        strategy: MaskingStrategy,
        modalities: list[str],
        counts: torch.Tensor,
        seed: int,
        attention: dict[str, torch.Tensor],
        on_object: torch.Tensor | None,
    ) -> Side:
        # The budget was drawn once for both sides: the strategies differ only in which tokens they hide.
        strategy.budget = FixedBudget(strategy.masking, modalities, counts[0].tolist())
        step = MaskedAutoencoderStep(self.model, strategy, self.config.loss).eval()
        _, choice, preds = step.reconstruct(batch, torch.Generator().manual_seed(seed))
        masks = {name: mask[0] for name, mask in choice.selection.masks.items()}  # {modality: [N] bool}
        label = strategy.score_label
        if choice.scores is None:  # random and block masking score nothing: show what attention would pick
            choice, label = replace(choice, scores=attention), "attention (unused)"
        figure = reconstruction_figure(
            batch, choice, preds, 1, self.model.config.patch_size, label, self.model.modalities
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
        )


def _bounded_bytes(path: Path, modality: str) -> bytes:
    """An uploaded file's bytes, refused before decoding when its image header declares more than
    MAX_PIXELS (a small file can declare gigapixels)."""
    limit = f"expected at most {MAX_PIXELS // 10**6} megapixels (downscale it first)"
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise ValueError(
            f"{path.name}: {modality} image far larger than PIL's pixel limit; {limit}"
        ) from None
    except IMAGE_ERRORS:  # not an image PIL reads (an .npy, or not an image at all): read_sample says which
        width = height = 0
    if width * height > MAX_PIXELS:
        raise ValueError(f"{path.name}: {modality} image of {width}x{height} pixels; {limit}")
    try:
        return path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the uploaded {modality} file {path.name}: {error}") from error
