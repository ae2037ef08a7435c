"""Experiment trackers beside TensorBoard: Weights & Biases and MLflow, both optional, both off by default.

    log:
      wandb: {enabled: true, project: guidedmae, mode: offline}   # offline needs no network: `wandb sync` later
      mlflow: {enabled: true}                                     # a local file store: out_dir/mlruns

What a run logs goes to them too: every scalar line, the config (as the run's config / a config.yaml
artifact), the reconstruction pictures and the final results. A resumed run continues the same tracker
run: its id is kept in the run folder (.wandb_id, .mlflow_run_id). Only the process that logs (rank 0)
talks to them. The packages are extras: `pip install 'guidedmae[wandb]'`, `pip install 'guidedmae[mlflow]'`.
"""

import importlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol

__all__ = ["MlflowConfig", "Tracker", "WandbConfig", "build_trackers"]

WANDB_MODES = ("offline", "online")
WANDB_ID, MLFLOW_ID = ".wandb_id", ".mlflow_run_id"


@dataclass
class WandbConfig:
    enabled: bool = False
    project: str = "guidedmae"
    entity: str = ""  # "" = the account's default
    name: str = ""  # "" = the run folder's name
    mode: str = "offline"  # offline (nothing leaves the machine; `wandb sync` uploads later) | online

    def __post_init__(self) -> None:
        if self.mode not in WANDB_MODES:
            raise ValueError(f"log.wandb.mode={self.mode!r}; expected one of {WANDB_MODES}")


@dataclass
class MlflowConfig:
    enabled: bool = False
    tracking_uri: str = ""  # "" = MLflow's file store in the run folder (out_dir/mlruns); or a server's URI
    experiment: str = "guidedmae"
    run_name: str = ""  # "" = the run folder's name


def _flat(values: dict, prefix: str = "") -> dict:
    """Nested dicts as one level of dotted keys."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _numbers(values: dict) -> dict[str, float]:
    return {
        key: float(v)
        for key, v in _flat(values).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _import(module: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ValueError(
            f"log.{extra}.enabled=true needs the {extra} package: pip install 'guidedmae[{extra}]'"
        ) from error


class Tracker:
    """What a tracker is told; every method is one call, after the run logged it itself."""

    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    def picture(self, path: Path, step: int) -> None: ...

    def results(self, results: dict, path: Path) -> None: ...

    def close(self) -> None: ...


class _Wandb(Tracker):
    def __init__(self, options: WandbConfig, out_dir: Path, config: dict) -> None:
        wandb = _import("wandb", "wandb")
        id_file = out_dir / WANDB_ID
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        self.wandb = wandb
        self.run = wandb.init(
            project=options.project, entity=options.entity or None, name=options.name or out_dir.name,
            mode=options.mode, dir=str(out_dir), id=run_id, resume="allow", config=config,
        )  # fmt: skip
        id_file.write_text(run_id)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def picture(self, path: Path, step: int) -> None:
        self.run.log({"pictures": self.wandb.Image(str(path))}, step=step)

    def results(self, results: dict, path: Path) -> None:
        self.run.summary.update(_numbers(results))

    def close(self) -> None:
        self.run.finish()


class _Mlflow(Tracker):
    def __init__(self, options: MlflowConfig, out_dir: Path, config: dict) -> None:
        tracking = _import("mlflow.tracking", "mlflow")
        self.Metric = _import("mlflow.entities", "mlflow").Metric
        uri = options.tracking_uri
        if not uri:
            # The default needs no server and no database: MLflow's file store, which MLflow 3 keeps in
            # maintenance mode and refuses unless asked (MLflow's own opt-in variable).
            uri = (out_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = tracking.MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(options.experiment)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(options.experiment)
        )
        id_file = out_dir / MLFLOW_ID
        if id_file.is_file():
            self.run_id = id_file.read_text().strip()
        else:
            self.run_id = self.client.create_run(
                experiment_id, run_name=options.run_name or out_dir.name
            ).info.run_id
            id_file.write_text(self.run_id)
            # Parameters cannot change within a run: the first config is the run's; the full one is an artifact.
            for key, value in _flat(config).items():
                self.client.log_param(self.run_id, key, str(value)[:500])
        self.out_dir = out_dir

    def scalars(self, step: int, values: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        metrics = [self.Metric(key, float(value), now, step) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def picture(self, path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path="pictures")

    def results(self, results: dict, path: Path) -> None:
        now = int(time.time() * 1000)
        step = int(results.get("step", 0))
        metrics = [
            self.Metric(f"final/{key}", value, now, step)
            for key, value in _numbers(results.get("metrics", {})).items()
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
        self.client.log_artifact(self.run_id, str(path))
        config = self.out_dir / "config.yaml"
        if config.is_file():
            self.client.log_artifact(self.run_id, str(config))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class TrackerSections(Protocol):
    """The sections of a run's log config (config.LogConfig) that name its trackers."""

    wandb: WandbConfig
    mlflow: MlflowConfig


def build_trackers(log: TrackerSections, out_dir: Path, config: dict) -> list[Tracker]:
    """The trackers `log` (the run's LogConfig) enables, started for the run in out_dir."""
    trackers: list[Tracker] = []
    if log.wandb.enabled:
        trackers.append(_Wandb(log.wandb, out_dir, config))
    if log.mlflow.enabled:
        trackers.append(_Mlflow(log.mlflow, out_dir, config))
    return trackers
