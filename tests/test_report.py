"""`guidedmae report`: a table of final metrics (rows = metrics, columns = runs) and a PNG of the curves."""

import json

import pytest
from PIL import Image

from guidedmae.cli import main
from guidedmae.report import read_run, summary_table


def write_run(folder, lines: list[dict], results: dict | None = None):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if results is not None:
        (folder / "results.json").write_text(json.dumps(results))
    return folder


def pretrain_lines(scale: float) -> list[dict]:
    return [
        {"step": 10, "loss": 2.0 * scale, "loss/rgb": 1.0 * scale, "lr": 1e-4},
        {"step": 20, "loss": 1.5 * scale, "loss/rgb": 0.8 * scale, "lr": 2e-4},
        {"event": "resumed", "message": "resumed from checkpoint-00000010.pt"},
        # The resumed run logs step 20 again: its later line is the one that counts.
        {"step": 20, "loss": 1.0 * scale, "loss/rgb": 0.5 * scale, "lr": 2e-4},
    ]


def test_final_metrics_are_the_last_logged_values_with_resumed_steps_replaced(tmp_path):
    run = read_run(write_run(tmp_path / "random", pretrain_lines(1.0)))
    assert run.final == {"loss": 1.0, "loss/rgb": 0.5}  # the lr is plotted, not tabulated
    assert run.curves["loss"] == {10: 2.0, 20: 1.0}
    averaged = read_run(tmp_path / "random", last=2)
    assert averaged.final["loss"] == pytest.approx(1.5)


def test_results_file_metrics_come_first_and_win_over_logged_values(tmp_path):
    folder = write_run(
        tmp_path / "probe",
        [{"step": 5, "loss": 0.7, "eval/top1": 40.0, "eval/miou": 3.0}],
        {"task": "classification", "metrics": {"top1": 61.25, "top5": 99.0}},
    )
    run = read_run(folder)
    assert list(run.final) == ["top1", "top5", "eval/miou", "loss"]  # eval/top1 is the final top1's history
    assert run.final["top1"] == 61.25


def test_table_has_one_row_per_metric_and_one_column_per_run(tmp_path):
    runs = [
        read_run(write_run(tmp_path / "random", pretrain_lines(1.0))),
        read_run(write_run(tmp_path / "attention", pretrain_lines(0.5), {"metrics": {"top1": 70.0}})),
    ]
    lines = summary_table(runs).splitlines()
    assert lines[0] == "| metric | random | attention |"
    assert lines[2:] == [
        "| loss | 1 | 0.5 |",
        "| loss/rgb | 0.5 | 0.25 |",
        "| top1 | - | 70 |",
    ]


def test_report_command_prints_the_table_and_writes_the_curves_png(tmp_path, capsys):
    first = write_run(tmp_path / "runs" / "random", pretrain_lines(1.0))
    second = write_run(tmp_path / "runs" / "attention", pretrain_lines(0.5))
    assert main(["report", str(first), str(second)]) == 0
    printed = capsys.readouterr().out
    assert "| metric | random | attention |" in printed and "| loss/rgb | 0.5 | 0.25 |" in printed
    with Image.open(tmp_path / "runs" / "report.png") as image:
        assert image.width > 400 and image.height > 200
    assert main(["report", str(first)]) == 0
    assert (first / "curves.png").is_file()


def test_report_names_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl or results.json"):
        read_run(tmp_path)
