"""Task targets and losses: berHu and L1 over valid depth, reduce_zero_label, soft and hard cross-entropy."""

import pytest
import torch

from guidedmae.tasks import TASKS, TaskConfig
from guidedmae.tasks.depth import berhu_loss, l1_loss
from guidedmae.tasks.semseg import reduce_zero_label


def target_of(task: str, batch, config):
    return TASKS[task].target(batch, config)


def task_loss(task: str, output, target, config, label_smoothing: float = 0.0):
    return TASKS[task].loss(output, target, config, label_smoothing)


def test_berhu_is_l1_below_the_threshold_and_scaled_l2_above_it():
    prediction = torch.tensor([1.0, 2.0, 6.0, 9.0]).view(1, 1, 2, 2)
    target = torch.tensor([1.5, 2.0, 1.0, 0.0]).view(1, 1, 2, 2)
    valid = target > 0
    # valid differences 0.5, 0, 5 -> c = 0.2 * 5 = 1; 0.5 and 0 are L1, 5 is (25 + 1) / 2
    assert berhu_loss(prediction, target, valid).item() == pytest.approx((0.5 + 0 + 13.0) / 3)
    assert l1_loss(prediction, target, valid).item() == pytest.approx(5.5 / 3)


def test_berhu_ignores_invalid_pixels_however_wrong():
    target = torch.full((1, 1, 2, 2), 2.0)
    valid = torch.tensor([[[[True, True], [False, False]]]])
    prediction = torch.tensor([[[[2.5, 1.5], [1000.0, -50.0]]]])
    top_row = berhu_loss(prediction[..., :1, :], target[..., :1, :], valid[..., :1, :])
    assert berhu_loss(prediction, target, valid).item() == pytest.approx(top_row.item())
    assert top_row.item() == pytest.approx((0.25 + 0.01) / 0.2)  # both |d| = 0.5 >= c = 0.1


def test_depth_task_loss_scores_only_depth_inside_the_range():
    config = TaskConfig(depth_loss="l1", min_depth=0.1, max_depth=10.0)
    target = torch.tensor([0.0, 5.0, 20.0, 1.0]).view(1, 1, 2, 2)  # missing, valid, beyond range, valid
    prediction = torch.tensor([3.0, 4.0, 3.0, 1.5]).view(1, 1, 2, 2)
    assert task_loss("depth", prediction, target, config).item() == pytest.approx((1.0 + 0.5) / 2)


def test_reduce_zero_label_shifts_classes_and_ignores_zero():
    semseg = torch.tensor([0, 1, 2, 150, 255])
    assert reduce_zero_label(semseg).tolist() == [255, 0, 1, 149, 255]
    batch = {"semseg": semseg}
    assert target_of("semseg", batch, TaskConfig(reduce_zero_label=True)).tolist() == [255, 0, 1, 149, 255]
    assert target_of("semseg", batch, TaskConfig()).tolist() == semseg.tolist()


def test_target_of_names_what_the_batch_lacks():
    with pytest.raises(ValueError, match=r"task classification needs 'label'.*\['rgb'\]"):
        target_of("classification", {"rgb": torch.zeros(1)}, TaskConfig())


def test_classification_loss_takes_class_ids_with_smoothing_or_soft_targets():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    hard = task_loss("classification", logits, torch.tensor([0]), TaskConfig(), label_smoothing=0.3)
    soft = task_loss("classification", logits, torch.tensor([[0.8, 0.1, 0.1]]), TaskConfig())
    assert hard.item() == pytest.approx(soft.item())  # 0.3 smoothing over 3 classes is [0.8, 0.1, 0.1]


def test_semseg_loss_leaves_out_the_ignore_index():
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 1, 0, 0] = 10.0
    target = torch.tensor([[[1, 255]]])
    assert task_loss("semseg", logits, target, TaskConfig()).item() == pytest.approx(0.0, abs=1e-3)


def test_task_config_names_bad_values():
    with pytest.raises(ValueError, match="task.depth_loss='l2'"):
        TaskConfig(depth_loss="l2")
    with pytest.raises(ValueError, match="task.min_depth=5"):
        TaskConfig(min_depth=5, max_depth=1)
