"""The per-step lr schedule: MultiMAE's cosine with warmup, continuation, restart, and its plot."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from guidedmae.cli import main
from guidedmae.infra.schedule import LRSchedule, ScheduleConfig, plot_schedule


def official_cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs, start_warmup_value):
    """MultiMAE's utils.cosine_scheduler, restated from its definition (linspace warmup, then cosine)."""
    warmup_iters = warmup_epochs * niter_per_ep
    warmup = np.linspace(start_warmup_value, base, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup, cosine))


def test_every_step_matches_multimae_cosine_scheduler():
    schedule = LRSchedule(
        ScheduleConfig(total_epochs=30, warmup_epochs=4, warmup_lr=1e-6, min_lr=1e-5), 1.5e-4, 7
    )
    expected = official_cosine_scheduler(1.5e-4, 1e-5, 30, 7, 4, 1e-6)
    ours = np.array([schedule.lr(step) for step in range(schedule.total_steps)])
    assert len(expected) == schedule.total_steps == 210
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=0)
    assert schedule.lr(0) == 1e-6 and schedule.lr(27) == pytest.approx(1.5e-4) and schedule.lr(28) == 1.5e-4


def test_continuing_1600_epochs_runs_the_tail_of_a_1700_epoch_cosine():
    per_epoch = 10
    config = ScheduleConfig(total_epochs=1700, start_epoch=1600, warmup_epochs=40, warmup_lr=1e-6, min_lr=0.0)
    schedule = LRSchedule(config, 1e-4, per_epoch)
    assert schedule.run_steps == 100 * per_epoch
    # lr(t) = lr_min + 1/2 (lr_base - lr_min)(1 + cos(pi (t - t_w) / (T - t_w))), t in epochs
    expected_start = 0.5 * 1e-4 * (1 + math.cos(math.pi * (1600 - 40) / (1700 - 40)))
    assert schedule.run_lr(0) == pytest.approx(expected_start, rel=1e-12)
    assert expected_start == pytest.approx(8.9e-7, rel=0.01)  # the small lr where the tail lives
    assert schedule.run_lr(schedule.run_steps - 1) < 1e-10
    assert schedule.run_lr(0) == schedule.lr(1600 * per_epoch)


def test_restart_warms_up_again_and_lr_scale_style_base_shifts_the_whole_curve():
    restart = LRSchedule(ScheduleConfig(total_epochs=100, start_epoch=0, warmup_epochs=20), 1e-4, 5)
    assert restart.run_lr(0) == 1e-6 and restart.run_lr(99) == pytest.approx(1e-4)
    assert restart.run_lr(100) == 1e-4 and restart.run_steps == 500
    tail = ScheduleConfig(total_epochs=1700, start_epoch=1600, warmup_epochs=40)
    scaled, plain = LRSchedule(tail, 1e-3, 5), LRSchedule(tail, 1e-4, 5)
    assert scaled.run_lr(10) == pytest.approx(10 * plain.run_lr(10), rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40),
    st.floats(0, 1),
    st.integers(1, 12),
    st.floats(1e-6, 1e-2),
    st.floats(0, 1e-6),
    st.floats(0, 1e-7),
)
def test_lr_rises_through_warmup_then_falls_and_stays_within_its_bounds(
    total, warmup_fraction, per_epoch, base, warmup_lr, min_lr
):
    config = ScheduleConfig(
        total_epochs=total, warmup_epochs=warmup_fraction * total, warmup_lr=warmup_lr, min_lr=min_lr
    )
    schedule = LRSchedule(config, base, per_epoch)
    lrs = np.array([schedule.lr(step) for step in range(schedule.total_steps)])
    warmup = schedule.warmup_steps
    tolerance = 1e-15
    assert (np.diff(lrs[:warmup]) >= -tolerance).all()
    assert (np.diff(lrs[warmup:]) <= tolerance).all()
    assert lrs.min() >= min(warmup_lr, min_lr) - tolerance and lrs.max() <= base + tolerance


def test_bad_schedules_name_the_key():
    with pytest.raises(
        ValueError, match="schedule.start_epoch=1700; expected 0 <= start_epoch < total_epochs"
    ):
        LRSchedule(ScheduleConfig(total_epochs=1700, start_epoch=1700), 1e-4, 10)
    with pytest.raises(ValueError, match="schedule.warmup_epochs=50"):
        LRSchedule(ScheduleConfig(total_epochs=40, warmup_epochs=50), 1e-4, 10)
    with pytest.raises(ValueError, match="outside the schedule's 400 steps"):
        LRSchedule(ScheduleConfig(total_epochs=40, warmup_epochs=5), 1e-4, 10).lr(400)


def test_plot_is_a_png_of_the_whole_curve(tmp_path):
    schedule = LRSchedule(ScheduleConfig(total_epochs=1700, start_epoch=1600, warmup_epochs=40), 1e-4, 50)
    path = tmp_path / "lr.png"
    plot_schedule(schedule, path)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (840, 432)
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_schedule_command_prints_this_runs_part_and_writes_the_plot(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        "data: {num_samples: 512, batch_size: 16}\nschedule: {total_epochs: 1700, warmup_epochs: 40}\n"
    )
    out = tmp_path / "curve.png"
    code = main(
        [
            "schedule",
            str(config),
            "schedule.start_epoch=1600",
            "optim.lr_scale=10",
            "--world-size",
            "2",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    # total batch 16 x 2 = 32 -> peak lr 1e-4 * 32 / 256 * 10; 512 / 2 / 16 = 16 steps per epoch
    assert "total batch 32" in printed and "peak lr 0.000125" in printed and "16 steps per epoch" in printed
    first = 0.5 * 1.25e-4 * (1 + math.cos(math.pi * (1600 - 40) / (1700 - 40)))
    assert f"step     25600  lr {first:.4g}" in printed
    assert "epochs 1600..1700 of 1700 = 1600 steps" in printed
