"""The `masking` config section: the budget keys shared by every strategy, then one section per strategy.

    masking:
      strategy: attention          # a name in the registry (masking.strategy.STRATEGIES)
      num_visible: 98              # tokens the encoder sees, over all modalities
      alphas: [1.0]                # Dirichlet concentration(s) of the visible share per modality
      attention: {select: high, noise: 0.0, ...}    # the keys of the attention strategy

A strategy's section is its options dataclass (see its module in masking/strategies/); a registered
strategy gets its section here without any edit of this file.
"""

from dataclasses import dataclass, field, fields, make_dataclass

from guidedmae.masking import strategies  # noqa: F401 - registers every strategy
from guidedmae.masking.strategy import STRATEGIES, MaskingStrategy

__all__ = ["MaskingConfig", "build_strategy", "validate_masking"]


@dataclass
class BudgetConfig:
    """The keys every strategy shares: which strategy, and how many tokens stay visible."""

    strategy: str = "random"  # a registered strategy: random | attention | ...
    num_visible: int = 98  # tokens the encoder sees, over all modalities (MultiMAE-B: 98 of 588)
    alphas: list[float] = field(default_factory=lambda: [1.0])  # Dirichlet: one value = symmetric
    sample_tasks_uniformly: bool = False  # MultiMAE's option: a random subset of modalities per sample


MaskingConfig = make_dataclass(
    "MaskingConfig",
    [
        (name, cls.options_class, field(default_factory=cls.options_class))
        for name, cls in STRATEGIES.items()
        if fields(cls.options_class)
    ],
    bases=(BudgetConfig,),
)
MaskingConfig.__module__ = __name__
MaskingConfig.__doc__ = "BudgetConfig's keys, then one section per strategy with options (masking.<name>)."


def _check_strategy(config, model) -> type[MaskingStrategy]:
    if config.strategy not in STRATEGIES:
        raise ValueError(f"masking.strategy={config.strategy!r}; expected one of {tuple(sorted(STRATEGIES))}")
    for name, cls in STRATEGIES.items():
        cls.check(getattr(config, name, None), model)
    return STRATEGIES[config.strategy]


def validate_masking(config, model) -> None:
    """Check a MaskingConfig against the architecture it will drive (MultiMAEConfig); errors name the
    offending key and what was expected."""
    _check_strategy(config, model)
    num_tokens = len(model.inputs) * (model.image_size // model.patch_size) ** 2
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


def build_strategy(config, model) -> MaskingStrategy:
    """The strategy `config.strategy` names, for a MultiMAE of architecture `model` (MultiMAEConfig).
    Its options are checked here; the budget against the token count when a run's config is loaded."""
    return _check_strategy(config, model)(config, model)
