"""Experiment trackers: MLflow's local file store and Weights & Biases offline, no network."""

import sys

import pytest

from guidedmae.cli import main
from guidedmae.infra.trackers import MLFLOW_ID, WANDB_ID
from tests.test_pretrain import tiny_config

RUN = ["schedule.total_epochs=2", "log.every=4", "log.picture_every=8"]


def test_mlflow_gets_the_metrics_pictures_config_and_results_and_a_resume_continues_its_run(tmp_path):
    mlflow = pytest.importorskip("mlflow")  # a test extra: installed by `make test`
    config, out = tiny_config(tmp_path), tmp_path / "run"
    assert main(["pretrain", str(config), f"out_dir={out}", "log.mlflow.enabled=true", *RUN]) == 0
    run_id = (out / MLFLOW_ID).read_text()
    client = mlflow.tracking.MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [4, 8, 12, 16]
    assert client.get_metric_history(run_id, "final/eval_random/loss")
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "pictures")
    }
    assert {
        "results.json",
        "config.yaml",
        "pictures/step-00000008.png",
        "pictures/step-00000016.png",
    } <= artifacts
    assert client.get_run(run_id).data.params["masking.strategy"] == "random"
    # A longer schedule would be another run; resuming the same one (here: after its end) keeps the id.
    assert (
        main(["pretrain", str(config), f"out_dir={out}", "log.mlflow.enabled=true", "resume=auto", *RUN]) == 0
    )
    assert (out / MLFLOW_ID).read_text() == run_id
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1


def test_wandb_offline_writes_the_run_locally(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config, out = tiny_config(tmp_path), tmp_path / "run"
    assert main(["pretrain", str(config), f"out_dir={out}", "log.wandb.enabled=true", *RUN]) == 0
    run_id = (out / WANDB_ID).read_text()
    [run_dir] = list((out / "wandb").glob(f"offline-run-*-{run_id}"))
    [log] = list(run_dir.glob(f"run-{run_id}.wandb"))  # the record log `wandb sync` uploads
    records = log.read_bytes()
    for logged in (b"loss_semseg", b"eval_random/loss", b"masking", b"pictures"):  # metrics, config, media
        assert logged in records
    assert list((run_dir / "files" / "media").rglob("*.png"))


def test_a_tracker_without_its_package_is_a_named_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: importing it fails
    config = tiny_config(tmp_path)
    assert main(["pretrain", str(config), f"out_dir={tmp_path / 'run'}", "log.wandb.enabled=true", *RUN]) == 1
    assert (
        "log.wandb.enabled=true needs the wandb package: pip install 'guidedmae[wandb]'"
        in capsys.readouterr().err
    )
