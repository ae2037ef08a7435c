"""The head a task is fine-tuned with: its config (`head:` of a fine-tuning config) and how it is built.

head = build_head(config.head, encoder_architecture)     # the kind the task takes, its default if ""
"""

from dataclasses import dataclass

from guidedmae.models.architecture import MultiMAEConfig
from guidedmae.models.heads import (
    ConvNeXtHead,
    DPTHead,
    LinearDenseHead,
    LinearHead,
    TaskHead,
    spread_layers,
)
from guidedmae.tasks.task import Task, get_task

__all__ = ["HeadConfig", "build_head"]


@dataclass
class HeadConfig:
    """The task and its head. Defaults: MultiMAE's IN1K classifier; see each field for the dense heads."""

    task: str = "classification"  # a registered task: classification | semseg | depth | normals
    kind: str = (
        ""  # "" = the task's default: linear (classification), convnext (semseg), dpt (depth, normals)
    )
    num_classes: int = 1000  # classification and semseg; depth predicts 1 channel (metres), normals 3
    pool: str = "mean"  # linear, knn: mean of all encoder tokens (official MultiViT) | global token
    norm: str = "layernorm"  # linear classification: layernorm | batchnorm (MAE's probe: no affine)
    init_scale: float = 0.001  # linear: initial classifier scale (MultiMAE's IN1K recipe)
    knn_k: int = 20  # knn: neighbours that vote (DINO's k-NN protocol)
    knn_temperature: float = 0.07  # knn: votes weigh exp(cosine similarity / temperature)
    readout: tuple[str, ...] = ()  # dense: input modalities whose tokens feed the head; () = every input
    dim: int = 6144  # convnext: features per token after projection
    preds_per_patch: int = 16  # convnext: each token unfolds into a sqrt x sqrt block
    depth: int = 4  # convnext: ConvNeXt blocks
    layers: tuple[int, ...] = ()  # dpt: 4 encoder blocks read (0-based); () = spread evenly, ending last
    layer_dims: tuple[int, ...] = (96, 192, 384, 768)  # dpt: channels of the 4 reassembled maps
    feature_dim: int = 256  # dpt: fusion channels

    def __post_init__(self) -> None:
        kinds = self.task_record.head_kinds
        if self.kind and self.kind not in kinds:
            raise ValueError(f"head.kind={self.kind!r} for task {self.task}; expected one of {kinds}")
        if self.num_classes < 1:
            raise ValueError(f"head.num_classes={self.num_classes}; expected at least 1")
        if self.knn_k < 1 or not self.knn_temperature > 0:
            raise ValueError(
                f"head.knn_k={self.knn_k}, head.knn_temperature={self.knn_temperature}; expected k >= 1 and a "
                "positive temperature"
            )

    @property
    def task_record(self) -> Task:
        """The registered task of head.task (a ValueError naming the key if there is none)."""
        return get_task(self.task)

    @property
    def head_kind(self) -> str:
        return self.kind or self.task_record.head_kinds[0]

    @property
    def out_channels(self) -> int:
        return self.task_record.out_channels(self.num_classes)


def build_head(config: HeadConfig, encoder: MultiMAEConfig) -> TaskHead:
    """The head of `config` for an encoder of architecture `encoder`."""
    readout = tuple(config.readout) or tuple(encoder.inputs)
    unknown = [name for name in readout if name not in encoder.inputs]
    if unknown:
        raise ValueError(
            f"head.readout {list(readout)} names {unknown}, not among model.inputs {list(encoder.inputs)}"
        )
    kind, task = config.head_kind, config.task_record
    if not task.dense:  # one answer per image from pooled tokens (knn: the same pooling, nothing trained)
        return LinearHead(
            encoder.dim, config.num_classes, encoder.depth, config.pool, config.init_scale, config.norm
        )
    if kind == "linear":
        return LinearDenseHead(encoder.dim, config.out_channels, readout, encoder.depth)
    if kind == "convnext":
        return ConvNeXtHead(
            encoder.dim,
            config.out_channels,
            readout,
            encoder.depth,
            dim=config.dim,
            preds_per_patch=config.preds_per_patch,
            depth=config.depth,
        )
    layers = tuple(config.layers) or spread_layers(encoder.depth)
    if not all(0 <= index < encoder.depth for index in layers):
        raise ValueError(f"head.layers {list(layers)} must be block indices in [0, {encoder.depth})")
    return DPTHead(
        encoder.dim,
        config.out_channels,
        readout,
        layers,
        layer_dims=config.layer_dims,
        feature_dim=config.feature_dim,
        kind="semseg" if task.classes_per_pixel else "regression",
    )
