"""Metrics: hand-computed cases, agreement with torchmetrics, and sums that split across batches."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex
from torchmetrics.regression import MeanAbsolutePercentageError, MeanSquaredError

from guidedmae.metrics import (
    ClassificationMeter,
    DepthMeter,
    NormalsMeter,
    SegmentationMeter,
    confusion_matrix,
    depth_scores,
    depth_sums,
    format_iou_table,
    hidden_object_share,
    iou_per_class,
    object_auc,
    object_tokens,
    segmentation_scores,
    top_attended_object_share,
    topk_correct,
)

IGNORE = 255


def test_topk_correct_by_hand():
    logits = torch.tensor(
        [
            [0.1, 0.5, 0.2, 0.0],  # ranking 1, 2, 0, 3
            [0.9, 0.1, 0.3, 0.2],  # ranking 0, 2, 3, 1
            [0.0, 0.1, 0.2, 0.3],  # ranking 3, 2, 1, 0
        ]
    )
    targets = torch.tensor([1, 3, 0])
    assert topk_correct(logits, targets, (1, 2, 3, 4)).tolist() == [1, 1, 2, 3]


def test_classification_meter_matches_torchmetrics_top1_and_top5():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 10, generator=generator)
    targets = torch.randint(0, 10, (200,), generator=generator)
    meter = ClassificationMeter()
    for chunk in range(0, 200, 64):  # batches of different sizes add up
        meter.update(logits[chunk : chunk + 64], targets[chunk : chunk + 64])
    scores = meter.compute()
    for k, key in ((1, "top1"), (5, "top5")):
        reference = MulticlassAccuracy(num_classes=10, top_k=k, average="micro")(logits, targets)
        assert scores[key] == pytest.approx(100 * reference.item(), abs=1e-4)


def test_confusion_matrix_and_iou_by_hand():
    target = torch.tensor([[0, 0, 1], [1, 2, IGNORE]])
    prediction = torch.tensor([[0, 1, 1], [1, 1, 0]])
    confusion = confusion_matrix(prediction, target, num_classes=4, ignore_index=IGNORE)
    # rows: target 0 -> predicted {0, 1}; target 1 -> {1, 1}; target 2 -> {1}; the ignored pixel is dropped
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    ious = iou_per_class(confusion)
    # class 0: 1 / (1 + 0 + 1); class 1: 2 / (2 + 2 + 0); class 2: 0 / 1; class 3: in neither map -> NaN
    assert ious[:3].tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert math.isnan(ious[3])
    scores = segmentation_scores(confusion)
    assert scores["miou"] == pytest.approx(100 / 3)  # mean over the 3 classes present
    assert scores["pixel_accuracy"] == pytest.approx(60.0)  # 3 of 5 counted pixels
    assert scores["mean_accuracy"] == pytest.approx(100 * (0.5 + 1.0 + 0.0) / 3)


def test_confusion_matrix_rejects_targets_outside_the_classes_naming_them():
    with pytest.raises(ValueError, match=r"\[0, 3\) or equal ignore_index=255; found 0..7"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), num_classes=3, ignore_index=IGNORE)


def test_segmentation_meter_matches_torchmetrics_jaccard_with_ignore_index():
    generator = torch.Generator().manual_seed(1)
    num_classes = 6
    logits = torch.randn(4, num_classes, 16, 16, generator=generator)
    targets = torch.randint(0, num_classes - 1, (4, 16, 16), generator=generator)  # class 5 never a target
    targets[:, :3] = IGNORE
    meter = SegmentationMeter(num_classes, IGNORE)
    for index in range(4):
        meter.update(logits[index : index + 1], targets[index : index + 1])
    ours = iou_per_class(meter.confusion)
    reference = MulticlassJaccardIndex(num_classes, average=None, ignore_index=IGNORE)(
        logits.argmax(1), targets
    )
    assert torch.allclose(ours.float(), reference, atol=1e-6)
    expected_miou = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=IGNORE)(
        logits.argmax(1), targets
    )
    assert meter.compute()["miou"] == pytest.approx(100 * expected_miou.item(), abs=1e-4)


def test_depth_metrics_by_hand():
    prediction = torch.tensor([2.0, 1.0, 3.0, 9.0])
    target = torch.tensor([1.0, 1.0, 2.0, 0.0])
    valid = target > 0  # the last pixel has no measurement
    scores = depth_scores(depth_sums(prediction, target, valid))
    # errors 1, 0, 1 -> RMSE sqrt(2/3); relative errors 1, 0, 0.5; ratios 2, 1, 1.5
    assert scores["rmse"] == pytest.approx(math.sqrt(2 / 3))
    assert scores["abs_rel"] == pytest.approx(0.5)
    assert scores["delta1"] == pytest.approx(100 / 3)  # only ratio 1 < 1.25
    assert scores["delta2"] == pytest.approx(200 / 3)  # 1.5 < 1.5625
    assert scores["delta3"] == pytest.approx(200 / 3)  # 2 > 1.953125


def test_depth_meter_matches_torchmetrics_rmse_and_mape_on_valid_pixels():
    generator = torch.Generator().manual_seed(2)
    targets = torch.rand(3, 1, 8, 8, generator=generator) * 5 + 0.5
    predictions = targets + 0.3 * torch.randn(3, 1, 8, 8, generator=generator)
    valid = torch.rand(3, 1, 8, 8, generator=generator) > 0.2
    meter = DepthMeter()
    for index in range(3):
        meter.update(predictions[index], targets[index], valid[index])
    scores = meter.compute()
    rmse = MeanSquaredError(squared=False)(predictions[valid].clamp_min(1e-6), targets[valid])
    mape = MeanAbsolutePercentageError()(predictions[valid].clamp_min(1e-6), targets[valid])
    assert scores["rmse"] == pytest.approx(rmse.item(), rel=1e-5)
    assert scores["abs_rel"] == pytest.approx(mape.item(), rel=1e-5)


def test_depth_sums_refuse_missing_depth_marked_valid():
    with pytest.raises(ValueError, match="exclude missing depth"):
        depth_sums(torch.ones(2), torch.tensor([1.0, 0.0]), torch.tensor([True, True]))


def test_meters_with_nothing_counted_give_nan_not_errors():
    assert all(math.isnan(value) for value in DepthMeter().compute().values())
    assert all(math.isnan(value) for value in ClassificationMeter().compute().values())


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=4), st.integers(0, 2**16))
def test_meter_totals_over_batches_equal_the_totals_of_one_batch(sizes, seed):
    """What distributed evaluation relies on: summing per-shard totals gives the whole split's metrics."""
    generator = torch.Generator().manual_seed(seed)
    total = sum(sizes)
    logits = torch.randn(total, 4, 3, 3, generator=generator)
    targets = torch.randint(0, 4, (total, 3, 3), generator=generator)
    whole = SegmentationMeter(4, IGNORE)
    whole.update(logits, targets)
    parts = SegmentationMeter(4, IGNORE)
    for chunk in torch.split(torch.arange(total), sizes):
        shard = SegmentationMeter(4, IGNORE)
        shard.update(logits[chunk], targets[chunk])
        parts.totals += shard.totals
    assert torch.equal(parts.totals, whole.totals)


def test_iou_table_lists_every_class_with_its_iou_and_pixel_share():
    confusion = torch.tensor([[3, 1], [0, 0]])
    table = format_iou_table(confusion, ["floor", "wall"])
    assert table.splitlines()[2:] == ["| floor | 75.00 | 100.00 |", "| wall | 0.00 | 0.00 |"]
    with pytest.raises(ValueError, match="1 class names for 2 classes"):
        format_iou_table(confusion, ["floor"])


def test_object_tokens_are_those_whose_patch_is_mostly_object():
    class_map = torch.zeros(1, 4, 4, dtype=torch.long)  # 2 x 2 tokens of 2 x 2 pixels
    class_map[0, :2, :2] = 5  # token 0: all object
    class_map[0, :2, 2] = 6  # token 1: half object (not more than half)
    class_map[0, 2:, 0:2] = torch.tensor([[3, 3], [3, 1]])  # token 2: three quarters object
    on_object = object_tokens(class_map, (2, 2), torch.tensor([3, 4, 5, 6]))
    assert on_object.tolist() == [[True, False, True, False]]


def test_top_attended_object_share_counts_objects_among_the_r_most_attended():
    on_object = torch.tensor([[True, False, True, False], [False, False, False, False], [True] * 4])
    scores = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]])
    shares = top_attended_object_share(scores, on_object)
    # R = 2 object tokens; the two most attended are tokens 0 (object) and 1 (not).
    assert shares[0].item() == 0.5 and math.isnan(shares[1].item()) and shares[2].item() == 1.0
    assert top_attended_object_share(-scores[:1], on_object[:1]).item() == 0.5


def test_normal_angles_are_measured_in_degrees_over_valid_pixels():
    target = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 1, 4)
    angles = torch.deg2rad(torch.tensor([0.0, 10.0, 20.0, 90.0]))
    prediction = torch.stack([torch.sin(angles), torch.zeros(4), torch.cos(angles)]).view(1, 3, 1, 4) * 3
    valid = torch.tensor([[[[True, True, True, False]]]])  # the 90-degree pixel is not scored
    meter = NormalsMeter()
    meter.update(prediction, target, valid)
    scores = meter.compute()
    assert scores["angle_mean"] == pytest.approx(10.0, abs=1e-3)
    assert scores["angle_median"] == pytest.approx(10.05)  # the 0.1-degree bin holding 10
    assert scores["angle_rmse"] == pytest.approx(((0 + 100 + 400) / 3) ** 0.5, abs=1e-3)
    assert scores["within_11.25"] == pytest.approx(200 / 3) and scores["within_30"] == 100


def test_object_auc_is_the_chance_an_object_token_outscores_another_ties_half():
    scores = torch.tensor(
        [[0.1, 0.9, 0.5, 0.5], [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0]]
    )
    on_object = torch.tensor(
        [[False, True, True, False], [True, False, False, False], [True, False, True, False], [False] * 4]
    )
    auc = object_auc(scores, on_object)
    # 0.9 beats both, 0.5 beats 0.1 and ties 0.5: 3.5 of 4 pairs; the lowest token: 0; all tied: 0.5
    assert auc[:3].tolist() == [0.875, 0.0, 0.5] and auc[3].isnan()


def test_hidden_object_share_counts_the_hidden_object_tokens():
    hidden = torch.tensor([[True, True, False, False], [True, False, False, False]])
    on_object = torch.tensor([[True, False, True, False], [False, False, False, False]])
    shares = hidden_object_share(hidden, on_object)
    assert shares[0].item() == 0.5 and shares[1].isnan()
