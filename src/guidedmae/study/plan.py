"""A study file and the runs it plans: base pretraining, arms x seeds, evaluations x fractions.

    study = load_study("configs/study/seed_cpu.yaml", ["seeds=[0,1]"])
    for run in plan(study): print(run.name, run.kind, run.depends_on, run.status())

Every run is an ordinary run of `guidedmae pretrain` or `guidedmae finetune`, in its own folder under
the study's out_dir: `base/`, `<arm>/seed-<k>/`, `<arm>/seed-<k>/<evaluation>[-f<fraction>]/`. Config
paths in a study file are relative to the file. A run is finished when its folder holds results.json;
it is interrupted when it holds checkpoints but no results.json (it resumes: every planned run has
resume=auto); a finished run whose config differs from the plan is refused unless asked to redo it.
"""

from dataclasses import dataclass, field
from pathlib import Path

from guidedmae.config import (
    ConfigError,
    FinetuneConfig,
    PretrainConfig,
    config_differences,
    config_to_dict,
    load_config,
)
from guidedmae.engine.checkpoint import LAST
from guidedmae.engine.run import RESULTS

__all__ = ["LAUNCHERS", "Run", "StudyConfig", "load_study", "plan"]

# How a run is executed, not what it computes: a finished run that differs only in these is not redone.
EXECUTION_KEYS = ("resume:", "run.threads:")

LAUNCHERS = ("local", "slurm", "debug")
BASE = "base"


@dataclass
class BaseSpec:
    """The pretraining every arm continues: a config (+ overrides), or given weights, or nothing (arms
    then start where their own configs say: from scratch, or their own model.init)."""

    config: str = ""
    overrides: list[str] = field(default_factory=list)
    checkpoint: str = ""  # given weights (e.g. the official MultiMAE-B .pth) instead of a base run


@dataclass
class ArmSpec:
    """One way to continue the base: a pretraining config + overrides. No config: no continuation
    (the evaluations read the base's weights, or random weights when there is no base either)."""

    name: str = "???"
    config: str = ""
    overrides: list[str] = field(default_factory=list)


@dataclass
class EvaluationSpec:
    """A fine-tuning or probe config run on every arm and seed, once per training fraction."""

    name: str = "???"
    config: str = "???"
    overrides: list[str] = field(default_factory=list)
    fractions: list[float] = field(default_factory=lambda: [1.0])  # data.fraction of each run


@dataclass
class LaunchConfig:
    launcher: str = "local"  # local (submitit's local executor) | slurm | debug (in this process)
    parallel: int = 1  # runs at once (local: each gets cores // parallel threads)
    timeout_min: int = 4320  # per run
    partition: str = ""  # slurm
    gpus_per_node: int = 0  # slurm: also the processes of each run (torchrun-like, one per GPU)
    nodes: int = 1  # slurm
    cpus_per_task: int = 0  # slurm; 0 = submitit's default
    account: str = ""  # slurm


@dataclass
class StudyConfig:
    out_dir: str = "???"
    base: BaseSpec = field(default_factory=BaseSpec)
    arms: list[ArmSpec] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    evaluations: list[EvaluationSpec] = field(default_factory=list)
    baseline: str = ""  # the arm every other is compared with (paired differences); "" = the first
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def __post_init__(self) -> None:
        names = [arm.name for arm in self.arms]
        if not names:
            raise ValueError("a study needs at least one arm")
        bad = [name for name in names if not name or "/" in name or name == BASE or names.count(name) > 1]
        if bad:
            raise ValueError(f"arm names {bad}: expected distinct folder names other than '{BASE}'")
        if self.baseline and self.baseline not in names:
            raise ValueError(f"baseline={self.baseline!r}; expected one of the arms {names}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds={list(self.seeds)}; expected distinct non-negative seeds")
        evaluations = [spec.name for spec in self.evaluations]
        if len(set(evaluations)) != len(evaluations) or any("/" in name for name in evaluations):
            raise ValueError(f"evaluation names {evaluations}: expected distinct folder names")
        for spec in self.evaluations:
            if not spec.fractions or not all(0 < f <= 1 for f in spec.fractions):
                raise ValueError(
                    f"evaluations {spec.name}: fractions={list(spec.fractions)}; expected values in (0, 1]"
                )
        if self.launch.launcher not in LAUNCHERS:
            raise ValueError(f"launch.launcher={self.launch.launcher!r}; expected one of {LAUNCHERS}")
        if self.launch.parallel < 1:
            raise ValueError(f"launch.parallel={self.launch.parallel}; expected at least 1")
        if self.base.config and self.base.checkpoint:
            raise ValueError("give base.config (a base run) or base.checkpoint (given weights), not both")

    @property
    def baseline_arm(self) -> str:
        return self.baseline or self.arms[0].name


def load_study(path: str | Path, overrides: list[str] = ()) -> tuple[StudyConfig, Path]:
    """The study of a file (with dotted overrides) and the folder its config paths are relative to."""
    study = load_config(StudyConfig, path, overrides)
    return study, Path(path).resolve().parent


@dataclass
class Run:
    """One run of the study."""

    name: str  # its folder under the study's out_dir: base, random/seed-0, random/seed-0/probe-f0.1
    kind: str  # pretrain | finetune
    config: str  # the YAML file (absolute)
    overrides: list[str]  # everything the study sets: out_dir, seed, model.init, resume=auto, ...
    depends_on: list[str]  # runs whose checkpoints it starts from
    arm: str = ""
    seed: int = -1
    evaluation: str = ""
    fraction: float = 1.0

    @property
    def schema(self) -> type:
        return PretrainConfig if self.kind == "pretrain" else FinetuneConfig

    def resolved(self):
        """The run's typed config: what `guidedmae pretrain/finetune CONFIG OVERRIDES` would run."""
        return load_config(self.schema, self.config, self.overrides)

    def out_dir(self) -> Path:
        return Path(dict(item.split("=", 1) for item in self.overrides)["out_dir"])

    def status(self) -> str:
        """new | interrupted | finished | changed (finished with another config than planned)."""
        out = self.out_dir()
        if (out / RESULTS).is_file():
            return "changed" if self.config_changes() else "finished"
        return "interrupted" if list(out.glob("checkpoint-*.pt")) else "new"

    def config_changes(self) -> list[str]:
        """What differs between the config the run folder was written with and the planned one.

        The written config is read through today's schema, so keys added since (at their defaults) are
        no change; how a run was executed (threads, resume) is none either.
        """
        written = self.out_dir() / "config.yaml"
        try:
            saved = config_to_dict(load_config(self.schema, written))
        except ConfigError as error:
            return [f"{written} no longer loads: {error}"]
        planned = config_to_dict(self.resolved())
        return [line for line in config_differences(saved, planned) if not line.startswith(EXECUTION_KEYS)]


def _path(base: Path, name: str) -> str:
    return str((base / name).resolve())


def plan(study: StudyConfig, folder: Path) -> list[Run]:
    """Every run of the study, each after the runs it depends on."""
    out = Path(study.out_dir).resolve()
    runs: list[Run] = []
    base_weights = study.base.checkpoint and _path(folder, study.base.checkpoint)
    if study.base.config:
        runs.append(
            Run(
                BASE,
                "pretrain",
                _path(folder, study.base.config),
                [*study.base.overrides, f"out_dir={out / BASE}", "resume=auto"],
                [],
            )
        )
        base_weights = str(out / BASE / LAST)
    for arm in study.arms:
        for seed in study.seeds:
            arm_dir = f"{arm.name}/seed-{seed}"
            weights, depends = base_weights, [BASE] if study.base.config else []
            if arm.config:
                init = [f"model.init={base_weights}"] if base_weights else []
                overrides = [*init, *arm.overrides, f"seed={seed}", f"out_dir={out / arm_dir}", "resume=auto"]
                runs.append(
                    Run(arm_dir, "pretrain", _path(folder, arm.config), overrides, depends, arm.name, seed)
                )
                weights, depends = str(out / arm_dir / LAST), [arm_dir]
            for spec in study.evaluations:
                for fraction in spec.fractions:
                    suffix = "" if fraction == 1 else f"-f{fraction:g}"
                    name = f"{arm_dir}/{spec.name}{suffix}"
                    init = [f"model.init={weights}"] if weights else []
                    overrides = [
                        *init,
                        *spec.overrides,
                        f"data.fraction={fraction}",
                        f"seed={seed}",
                        f"out_dir={out / name}",
                        "resume=auto",
                    ]
                    runs.append(
                        Run(
                            name,
                            "finetune",
                            _path(folder, spec.config),
                            overrides,
                            depends,
                            arm.name,
                            seed,
                            spec.name,
                            fraction,
                        )
                    )
    return runs
