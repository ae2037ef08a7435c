"""Evaluation metrics as sums that add up across batches and processes, then one final division.

Each meter keeps a single float64 tensor `totals` of counts and sums; `update` adds a batch to it,
`compute` turns it into metrics. Across processes, all-reduce `totals` with SUM before `compute`:
the result equals that of one process over the whole split (up to float64 rounding).

    top-1 / top-5     correct predictions among the k highest logits, over all samples
    mIoU              per-class IoU = TP / (TP + FP + FN) from the confusion matrix of all pixels,
                      ignore_index excluded; classes absent from both target and prediction are NaN
                      and left out of the mean
    depth             over all valid pixels of the split: RMSE = sqrt(mean (d - d*)^2),
                      AbsRel = mean |d - d*| / d*, delta_k = share with max(d / d*, d* / d) < 1.25^k
    normals           angle between predicted and target normals over all valid pixels: mean, median
                      (to 0.1 degree), RMSE, share within 11.25, 22.5 and 30 degrees
"""

import math

import torch
import torch.nn.functional as F

DEPTH_THRESHOLD_BASE = 1.25
MIN_DEPTH = 1e-6  # predictions are clamped to this before ratios (a depth head may output <= 0)


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """Samples whose target is among the k highest logits, for each k: logits [B, K], targets [B] -> [len(ks)].

    k larger than the number of classes counts every sample as correct (as torchmetrics does).
    """
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # [B, k_max]
    hits = top == targets[:, None]
    return torch.stack([hits[:, :k].any(dim=1).sum() for k in ks]).to(torch.float64)


def confusion_matrix(
    predictions: torch.Tensor, targets: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """[K, K] counts, rows = target class, columns = predicted class, over pixels not equal to ignore_index.

    predictions, targets: integer class maps of the same shape. A target outside [0, K) that is not
    ignore_index is an error (it would silently vanish from the metrics otherwise).
    """
    if predictions.shape != targets.shape:
        raise ValueError(
            f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} differ in shape"
        )
    targets, predictions = targets.flatten(), predictions.flatten()
    if ignore_index is not None:
        keep = targets != ignore_index
        targets, predictions = targets[keep], predictions[keep]
    if targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(
            f"target classes must lie in [0, {num_classes}) or equal ignore_index={ignore_index}; "
            f"found {targets.min().item()}..{targets.max().item()}"
        )
    counts = torch.bincount(targets * num_classes + predictions, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """Per-class IoU from a [K, K] confusion matrix: [K], NaN where a class is in neither maps."""
    confusion = confusion.to(torch.float64)
    true_positives = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - true_positives
    return torch.where(union > 0, true_positives / union.clamp_min(1), torch.nan)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, float]:
    """mIoU, pixel accuracy and mean class accuracy (percent) from a [K, K] confusion matrix."""
    confusion = confusion.to(torch.float64)
    per_class_pixels = confusion.sum(1)
    class_accuracy = torch.where(
        per_class_pixels > 0, confusion.diagonal() / per_class_pixels.clamp_min(1), torch.nan
    )
    total = confusion.sum()
    return {
        "miou": 100 * iou_per_class(confusion).nanmean().item(),
        "pixel_accuracy": 100 * (confusion.diagonal().sum() / total).item() if total > 0 else math.nan,
        "mean_accuracy": 100 * class_accuracy.nanmean().item(),
    }


def depth_sums(predictions: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sums over the valid pixels: [count, squared error, relative error, delta_1, delta_2, delta_3].

    predictions, targets: depth in metres, same shape; valid: bool mask of that shape (pixels with
    a measurement). Predictions are clamped to MIN_DEPTH so that ratios stay finite.
    """
    if not predictions.shape == targets.shape == valid.shape:
        raise ValueError(
            f"predictions {tuple(predictions.shape)}, targets {tuple(targets.shape)} and valid "
            f"{tuple(valid.shape)} must have the same shape"
        )
    prediction = predictions[valid].to(torch.float64).clamp_min(MIN_DEPTH)
    target = targets[valid].to(torch.float64)
    if target.numel() and target.min() <= 0:
        raise ValueError(
            "valid depth targets must be positive; exclude missing depth (0) from the valid mask"
        )
    ratio = torch.maximum(prediction / target, target / prediction)
    error = prediction - target
    deltas = [(ratio < DEPTH_THRESHOLD_BASE**k).sum() for k in (1, 2, 3)]
    return torch.stack(
        [
            torch.tensor(float(target.numel()), dtype=torch.float64, device=target.device),
            error.square().sum(),
            (error.abs() / target).sum(),
            *[count.to(torch.float64) for count in deltas],
        ]
    )


def depth_scores(sums: torch.Tensor) -> dict[str, float]:
    """RMSE (metres), AbsRel and delta_1..3 (percent) from `depth_sums` totals."""
    count = sums[0].item()
    if count == 0:
        return {name: math.nan for name in ("rmse", "abs_rel", "delta1", "delta2", "delta3")}
    return {
        "rmse": math.sqrt(sums[1].item() / count),
        "abs_rel": sums[2].item() / count,
        "delta1": 100 * sums[3].item() / count,
        "delta2": 100 * sums[4].item() / count,
        "delta3": 100 * sums[5].item() / count,
    }


class ClassificationMeter:
    """Top-1 / top-5 accuracy (percent). totals = [samples, top-1 correct, top-5 correct]."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.totals = torch.zeros(3, dtype=torch.float64, device=device)

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.totals[0] += targets.numel()
        self.totals[1:] += topk_correct(logits.detach(), targets, (1, 5)).to(self.totals.device)

    def compute(self) -> dict[str, float]:
        count = self.totals[0].item()
        if count == 0:
            return {"top1": math.nan, "top5": math.nan}
        return {"top1": 100 * self.totals[1].item() / count, "top5": 100 * self.totals[2].item() / count}


class SegmentationMeter:
    """Confusion matrix over all pixels; totals = the flattened [K, K] matrix."""

    def __init__(self, num_classes: int, ignore_index: int | None, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.totals = torch.zeros(num_classes * num_classes, dtype=torch.float64, device=device)

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """logits [B, K, H, W], targets [B, H, W] class ids (or ignore_index)."""
        confusion = confusion_matrix(
            logits.detach().argmax(dim=1), targets, self.num_classes, self.ignore_index
        )
        self.totals += confusion.flatten().to(self.totals)

    @property
    def confusion(self) -> torch.Tensor:
        return self.totals.view(self.num_classes, self.num_classes)

    def compute(self) -> dict[str, float]:
        return segmentation_scores(self.confusion)


class DepthMeter:
    """Depth errors over all valid pixels; totals = `depth_sums`."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.totals = torch.zeros(6, dtype=torch.float64, device=device)

    def update(self, predictions: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> None:
        self.totals += depth_sums(predictions.detach(), targets, valid).to(self.totals)

    def compute(self) -> dict[str, float]:
        return depth_scores(self.totals)


ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)  # degrees: the surface-normal benchmarks' (NYUv2) accuracy levels
ANGLE_BINS = 1800  # 0.1-degree bins over [0, 180]: the median's resolution


def normal_angles(predictions: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Angles in degrees [P] between predicted and target normals [B, 3, H, W] at the valid pixels
    [B, 1, H, W]; both are scaled to unit length first (a head's output has any length)."""
    cosine = F.cosine_similarity(predictions.float(), targets.float(), dim=1, eps=1e-6)  # [B, H, W]
    return torch.rad2deg(torch.arccos(cosine[valid[:, 0]].clamp(-1, 1)))


class NormalsMeter:
    """Angular errors of surface normals over all valid pixels (percent within each threshold, mean,
    median, RMSE in degrees). totals = [pixels, sum, sum of squares, within each threshold, histogram]."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.totals = torch.zeros(3 + len(ANGLE_THRESHOLDS) + ANGLE_BINS, dtype=torch.float64, device=device)

    def update(self, predictions: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> None:
        angles = normal_angles(predictions.detach(), targets, valid).double().to(self.totals.device)
        self.totals[0] += angles.numel()
        self.totals[1] += angles.sum()
        self.totals[2] += angles.square().sum()
        for index, threshold in enumerate(ANGLE_THRESHOLDS):
            self.totals[3 + index] += (angles < threshold).sum()
        bins = (angles / 180 * ANGLE_BINS).long().clamp_max(ANGLE_BINS - 1)
        self.totals[3 + len(ANGLE_THRESHOLDS) :] += torch.bincount(bins, minlength=ANGLE_BINS).double()

    def compute(self) -> dict[str, float]:
        count = self.totals[0].item()
        if count == 0:
            return {"angle_mean": math.nan}
        histogram = self.totals[3 + len(ANGLE_THRESHOLDS) :]
        median_bin = int(
            torch.searchsorted(histogram.cumsum(0), torch.tensor(count / 2, dtype=torch.float64))
        )
        scores = {
            "angle_mean": self.totals[1].item() / count,
            "angle_median": (median_bin + 0.5) * 180 / ANGLE_BINS,
            "angle_rmse": math.sqrt(self.totals[2].item() / count),
        }
        for index, threshold in enumerate(ANGLE_THRESHOLDS):
            scores[f"within_{threshold:g}"] = 100 * self.totals[3 + index].item() / count
        return scores


def format_iou_table(confusion: torch.Tensor, class_names: list[str] | None = None) -> str:
    """Per-class IoU (percent) as a markdown table, with each class's share of the target pixels."""
    ious = iou_per_class(confusion)
    pixels = confusion.to(torch.float64).sum(1)
    total = pixels.sum().clamp_min(1)
    names = class_names or [str(index) for index in range(len(ious))]
    if len(names) != len(ious):
        raise ValueError(f"{len(names)} class names for {len(ious)} classes")
    lines = ["| class | IoU (%) | pixels (%) |", "|---|---:|---:|"]
    for name, iou, count in zip(names, ious.tolist(), pixels.tolist()):
        shown = "n/a" if math.isnan(iou) else f"{100 * iou:.2f}"
        lines.append(f"| {name} | {shown} | {100 * count / total.item():.2f} |")
    return "\n".join(lines)


def object_fraction(
    class_map: torch.Tensor, grid: tuple[int, int], object_classes: torch.Tensor
) -> torch.Tensor:
    """The share of each token's patch of class_map [B, H, W] (class ids, H and W multiples of the grid)
    that holds one of object_classes [K]: float [B, rows * cols]."""
    batch, height, width = class_map.shape
    rows, cols = grid
    on_object = torch.isin(class_map, object_classes.to(class_map.device)).float()
    return on_object.view(batch, rows, height // rows, cols, width // cols).mean(dim=(2, 4)).flatten(1)


def object_tokens(
    class_map: torch.Tensor, grid: tuple[int, int], object_classes: torch.Tensor
) -> torch.Tensor:
    """Which tokens lie on objects: bool [B, rows * cols], True where more than half of the token's patch
    holds an object class (see object_fraction)."""
    return object_fraction(class_map, grid, object_classes) > 0.5


def top_attended_object_share(scores: torch.Tensor, on_object: torch.Tensor) -> torch.Tensor:
    """Per sample, the share of its R most attended tokens that lie on objects, R = its number of object
    tokens (1 when attention ranks every object token first; the object share of the image by chance).

    scores: [B, N] attention per token; on_object: bool [B, N]. Returns float64 [B], NaN without objects.
    """
    count = on_object.sum(dim=1)  # [B]
    ranks = scores.argsort(dim=1, descending=True).argsort(dim=1)  # [B, N] 0 = most attended
    on_top = (on_object & (ranks < count[:, None])).sum(dim=1)
    return torch.where(count > 0, on_top.double() / count.clamp_min(1), torch.nan)


def object_auc(scores: torch.Tensor, on_object: torch.Tensor) -> torch.Tensor:
    """Per sample, the probability that an object token outscores a token off the objects (ties count
    half): the area under the ROC curve of the scores as an object detector. 0.5 is chance, 1 every object
    token first. scores: [B, N]; on_object: bool [B, N]. float64 [B], NaN without both kinds of token."""
    ranks = _average_ranks(scores.double())  # 1 = lowest
    objects = on_object.sum(dim=1).double()
    others = on_object.shape[1] - objects
    rank_sum = (ranks * on_object).sum(dim=1)
    auc = (rank_sum - objects * (objects + 1) / 2) / (objects * others)
    return torch.where((objects > 0) & (others > 0), auc, torch.nan)


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N of each row of values [B, N], tied values sharing their mean rank."""
    order = values.argsort(dim=1)
    sorted_values = values.gather(1, order)
    positions = torch.arange(1, values.shape[1] + 1, dtype=torch.float64, device=values.device).expand_as(
        values
    )
    # The mean position of each run of equal values: cumulative sums at the run's boundaries.
    new_run = torch.ones_like(sorted_values, dtype=torch.bool)
    new_run[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    run = new_run.long().cumsum(dim=1) - 1  # [B, N] run index of every sorted position
    sums = torch.zeros_like(positions).scatter_add_(1, run, positions)
    counts = torch.zeros_like(positions).scatter_add_(1, run, torch.ones_like(positions))
    mean_rank = (sums / counts.clamp_min(1)).gather(1, run)
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def hidden_object_share(hidden: torch.Tensor, on_object: torch.Tensor) -> torch.Tensor:
    """Per sample, the share of its object tokens that a mask hides: hidden, on_object bool [B, N] ->
    float64 [B], NaN without object tokens."""
    count = on_object.sum(dim=1)
    share = (hidden & on_object).sum(dim=1).double() / count.clamp_min(1)
    return torch.where(count > 0, share, torch.nan)
