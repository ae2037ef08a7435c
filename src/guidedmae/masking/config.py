"""The `masking` config section: the budget keys shared by every strategy, then one section per strategy.

    masking:
      strategy: attention          # a name in the registry (masking.strategy.STRATEGIES)
      num_visible: 98              # tokens the encoder sees, over all modalities
      alphas: [1.0]                # Dirichlet concentration(s) of the visible share per modality
      budget: dirichlet            # or mixture (alpha_mixture), adaptive (adaptive: {...})
      curriculum: {shape: linear, start: 0.0, end: 0.5}   # guided share of the masked tokens over the run
      attention: {select: high, noise: 0.0, ...}    # the keys of the attention strategy

A strategy's section is its options dataclass (see its module in masking/strategies/); a registered
strategy gets its section here without any edit of this file.
"""

from dataclasses import field, fields, make_dataclass, replace
from typing import TYPE_CHECKING

from guidedmae.infra.distributed import DistributedContext
from guidedmae.masking import strategies  # noqa: F401 - registers every strategy
from guidedmae.masking.shared import AdaptiveBudgetOptions, CurriculumConfig, MaskingBase

if TYPE_CHECKING:
    from guidedmae.masking.shared import MaskingConfig
from guidedmae.masking.strategy import STRATEGIES, MaskingStrategy
from guidedmae.models.architecture import MultiMAEConfig

__all__ = [
    "AdaptiveBudgetOptions",
    "CurriculumConfig",
    "MaskingBase",
    "MaskingConfig",
    "build_strategy",
    "strategy_variants",
    "validate_masking",
]

BASELINE = "random"  # the strategy every other is compared with (bench, the viewer)


BUDGETS = ("dirichlet", "mixture", "adaptive")
CURRICULUM_SHAPES = ("none", "linear", "cosine", "step")
SAMPLINGS = ("topk", "gumbel")


if not TYPE_CHECKING:  # what a type checker sees of it is declared in masking.shared
    MaskingConfig = make_dataclass(
        "MaskingConfig",
        [
            (name, cls.options_class, field(default_factory=cls.options_class))
            for name, cls in STRATEGIES.items()
            if fields(cls.options_class)
        ],
        bases=(MaskingBase,),
    )
    MaskingConfig.__module__ = __name__
    MaskingConfig.__doc__ = "MaskingBase's keys, then one section per strategy with options (masking.<name>)."


def _check_strategy(config: MaskingConfig, model: MultiMAEConfig) -> type[MaskingStrategy]:
    if config.strategy not in STRATEGIES:
        raise ValueError(f"masking.strategy={config.strategy!r}; expected one of {tuple(sorted(STRATEGIES))}")
    for cls in STRATEGIES.values():
        cls.check(config, model)
    return STRATEGIES[config.strategy]


def _check_budget(config: MaskingConfig, model: MultiMAEConfig) -> None:
    num_tokens = model.num_input_tokens
    if not 0 <= config.num_visible <= num_tokens:
        raise ValueError(
            f"masking.num_visible={config.num_visible}; expected 0..{num_tokens} (all input tokens)"
        )
    if not config.alphas or any(not alpha > 0 for alpha in config.alphas):
        raise ValueError(f"masking.alphas={list(config.alphas)}; expected positive concentrations")
    if len(config.alphas) not in (1, len(model.inputs)):
        raise ValueError(
            f"masking.alphas has {len(config.alphas)} values; expected 1 (symmetric) or one per input "
            f"modality ({len(model.inputs)}: {list(model.inputs)})"
        )
    if config.budget not in BUDGETS:
        raise ValueError(f"masking.budget={config.budget!r}; expected one of {BUDGETS}")
    mixture = [list(vector) for vector in config.alpha_mixture]
    if config.budget == "mixture" and (
        not mixture or any(len(v) != len(model.inputs) or min(v) <= 0 for v in mixture)
    ):
        raise ValueError(
            f"masking.alpha_mixture={mixture}; masking.budget=mixture needs a list of alpha vectors, each "
            f"of {len(model.inputs)} positive values ({list(model.inputs)})"
        )
    if config.budget != "mixture" and mixture:
        raise ValueError(
            f"masking.alpha_mixture is set but masking.budget={config.budget!r}; use budget=mixture"
        )
    adaptive = config.adaptive
    if config.budget == "adaptive" and len(config.alphas) != 1:
        raise ValueError(
            "masking.budget=adaptive scales one base concentration: give one value in masking.alphas"
        )
    rules = (
        ("momentum", 0 <= adaptive.momentum < 1, "in [0, 1)"),
        ("temperature", adaptive.temperature > 0, "> 0"),
        ("sign", adaptive.sign in (1, -1), "1 or -1"),
        ("floor", adaptive.floor >= 0, ">= 0"),
    )
    for key, ok, expected in rules:
        if not ok:
            raise ValueError(f"masking.adaptive.{key}={getattr(adaptive, key)!r}; expected {expected}")


def _check_wrappers(config: MaskingConfig) -> None:
    """Curriculum, per-image random masking and sampling: only for guided strategies."""
    curriculum = config.curriculum
    if curriculum.shape not in CURRICULUM_SHAPES:
        raise ValueError(
            f"masking.curriculum.shape={curriculum.shape!r}; expected one of {CURRICULUM_SHAPES}"
        )
    for key in ("start", "end", "at"):
        if not 0 <= getattr(curriculum, key) <= 1:
            raise ValueError(
                f"masking.curriculum.{key}={getattr(curriculum, key)}; expected a value in [0, 1]"
            )
    if not 0 <= config.random_images <= 1:
        raise ValueError(f"masking.random_images={config.random_images}; expected a share in [0, 1]")
    if config.sampling not in SAMPLINGS:
        raise ValueError(f"masking.sampling={config.sampling!r}; expected one of {SAMPLINGS}")
    if not config.temperature > 0:
        raise ValueError(f"masking.temperature={config.temperature}; expected a positive number")
    if not STRATEGIES[config.strategy].guided:
        used = {
            "masking.curriculum": curriculum.shape != "none",
            "masking.random_images": config.random_images > 0,
            "masking.sampling": config.sampling != "topk",
        }
        if any(used.values()):
            names = ", ".join(name for name, on in used.items() if on)
            raise ValueError(
                f"{names} apply to guided strategies; masking.strategy={config.strategy!r} has no guidance"
            )


def validate_masking(config: MaskingConfig, model: MultiMAEConfig) -> None:
    """Check a MaskingConfig against the architecture it will drive (MultiMAEConfig); errors name the
    offending key and what was expected."""
    _check_strategy(config, model)
    _check_budget(config, model)
    _check_wrappers(config)


def build_strategy(
    config: MaskingConfig,
    model: MultiMAEConfig,
    num_samples: int = 0,
    context: DistributedContext | None = None,
) -> MaskingStrategy:
    """The strategy `config.strategy` names, for a MultiMAE of architecture `model` (MultiMAEConfig).

    num_samples: the training set's size (strategies that remember samples need it); context: the
    processes of the run (strategies whose state must agree across processes talk through it).
    Its options are checked here; the budget against the token count when a run's config is loaded.
    """
    return _check_strategy(config, model)(config, model, num_samples, context or DistributedContext())


def strategy_variants(base: MaskingConfig, model: MultiMAEConfig) -> dict[str, MaskingConfig]:
    """Every registered strategy's variants (random masking, the baseline, first), by row name, each a
    MaskingConfig with the budget (visible tokens, Dirichlet alphas) of `base` and its options over their
    defaults; model: the MultiMAEConfig the variants are for."""
    variants: dict[str, MaskingConfig] = {}
    for name in sorted(STRATEGIES, key=lambda name: name != BASELINE):
        cls = STRATEGIES[name]
        for row, options in cls.variants(model).items():
            sections = {name: replace(cls.options_class(), **options)} if hasattr(base, name) else {}
            variants[row] = replace(base, strategy=name, **sections)
    return variants
