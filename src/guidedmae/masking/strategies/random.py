"""Random masking, MultiMAE's baseline: uniform noise as priorities (MultiMAE's noise + argsort)."""

from guidedmae.masking.priority import random_priorities
from guidedmae.masking.strategy import MaskingContext, MaskingStrategy, Proposal, register


@register("random")
class RandomMasking(MaskingStrategy):
    """Within each modality, a uniformly random subset of the budget's size stays visible."""

    guided = False

    def propose(self, context: MaskingContext) -> Proposal:
        tokens = context.tokens
        per_modality = dict.fromkeys(tokens.modalities, tokens.tokens_per_modality)
        priorities = random_priorities(tokens.embeddings.shape[0], per_modality, context.generator)
        return Proposal({name: value.to(tokens.embeddings.device) for name, value in priorities.items()})
