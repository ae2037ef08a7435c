"""k-nearest-neighbour classification on frozen features (DINO's protocol): a probe that trains nothing.

    guidedmae finetune synthetic_knn model.init=runs/demo/checkpoint-last.pt

Every training image, under the evaluation transform, is encoded once; its pooled features (the mean of
all tokens, or the global token: head.pool), L2-normalized, go into the bank. Each evaluation image
votes among its head.knn_k most cosine-similar bank entries, each vote weighing
exp(similarity / head.knn_temperature) (DINO: k = 20, T = 0.07); top-1 and top-5 of the votes. Under
torchrun every process encodes its share of both splits and the bank is gathered. It is a job that trains
nothing (KnnJob): guidedmae.engine.fit starts and finishes it as every run, so its folder gets what a
fine-tuning run writes, without checkpoints: config.yaml, metrics.jsonl, results.json.
"""

from dataclasses import replace

import torch
import torch.nn.functional as F

from guidedmae.config import FinetuneConfig
from guidedmae.data.datasets import SizedDataset
from guidedmae.engine.evaluate import shard_loader
from guidedmae.engine.finetune_setup import build_model, evaluation_set, split_name, training_set
from guidedmae.engine.job import Job, JobParts, LoopState, Training
from guidedmae.infra.distributed import (
    DistributedContext,
    all_gather_objects,
    all_gather_tensors,
    all_reduce_sum,
)
from guidedmae.infra.optim import layer_decay_groups
from guidedmae.infra.precision import autocast
from guidedmae.infra.run_log import RunLogger
from guidedmae.metrics import ClassificationMeter
from guidedmae.models.heads import LinearHead
from guidedmae.models.pretrained import InitReport, load_pretrained
from guidedmae.models.task_model import FineTuneModel

__all__ = ["KnnJob", "knn_votes"]

VOTE_CHUNK = 1024  # queries voting at once: a [chunk, bank] similarity matrix


@torch.no_grad()
def _pooled_features(
    model: FineTuneModel, dataset: SizedDataset, config: FinetuneConfig, context: DistributedContext
) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's share of the split: L2-normalized pooled features [n, D] and labels [n]."""
    head = model.head
    if not isinstance(head, LinearHead):  # what build_head gives head.kind=knn: its pooling is the probe's
        raise ValueError(f"the k-NN probe pools tokens as a LinearHead does, not a {type(head).__name__}")
    features, labels = [], []
    batch_size = config.eval.batch_size or config.data.batch_size
    for batch in shard_loader(dataset, batch_size, config.data.num_workers, context):
        inputs = {name: batch[name].to(context.device) for name in model.encoder.config.inputs}
        with autocast(context.device, config.run.precision):
            tokens = model.encoder.tokenize(inputs)
            pooled = head.pooled(model.encoder.encode_layers(tokens.embeddings, head.layers))
        features.append(F.normalize(pooled.float(), dim=-1))
        labels.append(batch["label"].to(context.device))
    dim = model.encoder.config.dim
    empty = (
        torch.zeros(0, dim, device=context.device),
        torch.zeros(0, dtype=torch.long, device=context.device),
    )
    return (torch.cat(features), torch.cat(labels)) if features else empty


def _gathered(context: DistributedContext, tensor: torch.Tensor) -> torch.Tensor:
    """Every process's rows, concatenated in rank order (the shares may differ by one row)."""
    sizes = all_gather_objects(context, len(tensor))
    padded = torch.zeros(max(sizes), *tensor.shape[1:], dtype=tensor.dtype, device=tensor.device)
    padded[: len(tensor)] = tensor
    return torch.cat([part[:size] for part, size in zip(all_gather_tensors(context, padded), sizes)])


def knn_votes(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
) -> torch.Tensor:
    """Weighted votes [Q, num_classes]: each query's k most similar bank rows (cosine; both normalized)
    vote for their label with weight exp(similarity / temperature)."""
    similarity, nearest = (queries @ bank.T).topk(min(k, len(bank)), dim=1)  # [Q, k]
    weights = (similarity / temperature).exp()
    votes = torch.zeros(len(queries), num_classes, device=queries.device, dtype=weights.dtype)
    return votes.scatter_add_(1, bank_labels[nearest], weights)


@torch.no_grad()
def _knn_scores(
    model: FineTuneModel,
    bank_set: SizedDataset,
    eval_set: SizedDataset,
    config: FinetuneConfig,
    context: DistributedContext,
) -> dict:
    """Top-1 / top-5 of the votes over the evaluation split; the bank from every process's share."""
    bank_features, bank_labels = _pooled_features(model, bank_set, config, context)
    bank, bank_labels = _gathered(context, bank_features), _gathered(context, bank_labels)
    queries, labels = _pooled_features(model, eval_set, config, context)
    meter = ClassificationMeter(context.device)
    head = config.head
    for start in range(0, len(queries), VOTE_CHUNK):
        chunk = slice(start, start + VOTE_CHUNK)
        votes = knn_votes(
            queries[chunk], bank, bank_labels, head.num_classes, head.knn_k, head.knn_temperature
        )
        meter.update(votes, labels[chunk])
    meter.totals = all_reduce_sum(context, meter.totals)
    return {"metrics": meter.compute()}


class KnnJob(Job[FineTuneModel]):
    """The k-NN probe as a job that trains nothing: fit starts and finishes it as every run."""

    kind = "k-NN probe"
    trains = False
    config: FinetuneConfig

    def build(self, context: DistributedContext) -> JobParts:
        config = self.config
        self.model = build_model(config)
        # The bank holds the training images as the evaluation sees its own: no augmentation.
        augment = replace(config.data.augment, train=False)
        self.bank_set = training_set(replace(config, data=replace(config.data, augment=augment)))
        self.eval_set = evaluation_set(config)
        groups = layer_decay_groups(self.model, config.optim.weight_decay, config.optim.layer_decay)
        return JobParts(self.model, self.model, self.bank_set, groups)

    def initialize(self, model: FineTuneModel, path: str) -> InitReport:
        return load_pretrained(model.encoder, path)

    def describe(self, training: Training) -> str:
        head = self.config.head
        return (
            f"k={head.knn_k}, T={head.knn_temperature}; {len(self.bank_set)} training samples in the bank, "
            f"{len(self.eval_set)} evaluation samples"
        )

    def finish(self, training: Training, state: LoopState, logger: RunLogger) -> dict:
        scores = _knn_scores(self.model.eval(), self.bank_set, self.eval_set, self.config, training.context)
        shown = ", ".join(f"{name} {value:.4g}" for name, value in scores["metrics"].items())
        logger.event(
            "eval", f"k-NN, {split_name(self.config)}: {shown}", step=state.step, **scores["metrics"]
        )
        return {"task": self.config.head.task, **scores}
