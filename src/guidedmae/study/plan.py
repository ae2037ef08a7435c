"""A study file and the runs it plans: base pretraining, arms x seeds, evaluations x fractions.

    study, folder = load_study("configs/study/seed_cpu.yaml", ["seeds=[0,1]"])
    for run in plan(study, folder): print(run.name, run.kind, run.depends_on, run.status())

Every run is an ordinary run of `guidedmae pretrain` or `guidedmae finetune`, in its own folder under
the study's out_dir: `base/`, `<arm>/seed-<k>/`, `<arm>/seed-<k>/<evaluation>[-f<fraction>]/`. With
several base seeds (`base.seeds`), every base is a replicate of its own: `base/seed-<b>/` and
`<arm>/base-<b>/seed-<k>/...`, every arm continuing every base. Config paths in a study file are relative
to the file. A run is finished when its folder holds results.json; it is interrupted when it holds
checkpoints but no results.json (it resumes: every planned run has resume=auto). A started run whose
config differs from the plan, or that starts from a run that is stale or no longer finished (moved aside,
removed), is stale: refused unless asked to redo it.
"""

import fnmatch
import re
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
from guidedmae.engine.job import RESULTS
from guidedmae.engine.pretrain import PICTURES
from guidedmae.infra.checkpoints import LAST
from guidedmae.infra.fields import check_seed
from guidedmae.infra.run_log import METRICS, TENSORBOARD

__all__ = ["LAUNCHERS", "STUDY_FILE", "Run", "StudyConfig", "load_study", "plan", "stale_runs"]

# How a run is executed, not what it computes: a finished run that differs only in these is not redone.
EXECUTION_KEYS = ("resume:", "run.threads:")

LAUNCHERS = ("local", "slurm", "debug")
BASE = "base"
# Arm and evaluation names are folder names: no separators, never '.', '..' or hidden; at most 100 characters,
# so that a fraction's suffix and a replaced run's (`.replaced-<time>`) stay within a file name's 255 bytes.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")
REPLACED = ".replaced-"  # a stale run's folder moved aside: <run>.replaced-<time>
STUDY_FILE = "study.yaml"  # the resolved study, in its out_dir: what `guidedmae report STUDY_DIR` reads
LOGS = "logs"  # submitit's folder of job logs, in the study's out_dir
# What the study writes beside its arms (itself, its tables and figures: guidedmae.study.tables, its job logs)
# and a run in its folder beside its evaluations: names an arm or an evaluation cannot take.
STUDY_NAMES = (BASE, LOGS, STUDY_FILE, "study.md", "study.json", "*.png", f"*{REPLACED}*")
RUN_NAMES = (
    "checkpoint-*.pt", "config*.yaml", METRICS, RESULTS, TENSORBOARD, PICTURES, "wandb", "mlruns", f"*{REPLACED}*"
)  # fmt: skip


@dataclass
class BaseSpec:
    """The pretraining every arm continues: a config (+ overrides), or given weights, or nothing (arms
    then start where their own configs say: from scratch, or their own model.init)."""

    config: str = ""
    overrides: list[str] = field(default_factory=list)
    checkpoint: str = ""  # given weights (e.g. the official MultiMAE-B .pth) instead of a base run
    # Several bases, one per seed (each its own replicate: the arms continue every one); [] = one base
    # run with the seed its config gives.
    seeds: list[int] = field(default_factory=list)


@dataclass
class ArmSpec:
    """One way to continue the base: a pretraining config + overrides (after arm_defaults'). No config, or
    pretrain: false, is no continuation: the evaluations read the base's weights (random weights when
    there is no base either)."""

    name: str = "???"
    config: str = ""  # "" = arm_defaults.config
    overrides: list[str] = field(default_factory=list)
    pretrain: bool = True
    control: str = ""  # the arm its paired differences are to (its matched control); "" = the baseline


@dataclass
class ArmDefaults:
    """What every arm starts from: its config and overrides, before the arm's own."""

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
    arm_defaults: ArmDefaults = field(default_factory=ArmDefaults)
    arms: list[ArmSpec] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    evaluations: list[EvaluationSpec] = field(default_factory=list)
    baseline: str = ""  # the arm every other is compared with (paired differences); "" = the first
    # The smallest difference to the baseline that matters, per metric (`<source>: <name>`, or `<name>` for
    # every source): the equivalence margin of the tables' verdicts, and the detectable effect that
    # `--dry-run` sizes the seeds for.
    margins: dict[str, float] = field(default_factory=dict)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def __post_init__(self) -> None:
        names = [arm.name for arm in self.arms]
        if not names:
            raise ValueError("a study needs at least one arm")
        _check_names("arm", names, STUDY_NAMES, "the study's folder")
        if self.baseline and self.baseline not in names:
            raise ValueError(f"baseline={self.baseline!r}; expected one of the arms {names}")
        for arm in self.arms:
            if arm.control and (arm.control not in names or arm.control == arm.name):
                raise ValueError(f"arms {arm.name}: control={arm.control!r}; expected another arm of {names}")
        for key, seeds in (("seeds", self.seeds), ("base.seeds", self.base.seeds)):
            for index, seed in enumerate(seeds):
                check_seed(seed, f"{key}[{index}]")
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"{key}={list(seeds)}; expected distinct seeds")
        if not self.seeds:
            raise ValueError("seeds=[]; expected at least one seed")
        if self.base.seeds and not self.base.config:
            raise ValueError(f"base.seeds={list(self.base.seeds)} needs base.config (the base run to repeat)")
        _check_names("evaluation", [spec.name for spec in self.evaluations], RUN_NAMES, "a run's folder")
        bad = {key: value for key, value in self.margins.items() if not value > 0}
        if bad:
            raise ValueError(f"margins {bad}: expected positive differences")
        for spec in self.evaluations:
            if not spec.fractions or not all(0 < f <= 1 for f in spec.fractions):
                raise ValueError(
                    f"evaluations {spec.name}: fractions={list(spec.fractions)}; expected values in (0, 1]"
                )
        if self.launch.launcher not in LAUNCHERS:
            raise ValueError(f"launch.launcher={self.launch.launcher!r}; expected one of {LAUNCHERS}")
        launch = self.launch
        if launch.parallel < 1 or launch.timeout_min < 1 or launch.nodes < 1:
            raise ValueError(
                f"launch.parallel={launch.parallel}, launch.timeout_min={launch.timeout_min}, launch.nodes="
                f"{launch.nodes}; expected at least 1 each"
            )
        if launch.gpus_per_node < 0 or launch.cpus_per_task < 0:
            raise ValueError(
                f"launch.gpus_per_node={launch.gpus_per_node}, launch.cpus_per_task={launch.cpus_per_task}; "
                "expected non-negative counts"
            )
        if self.base.config and self.base.checkpoint:
            raise ValueError("give base.config (a base run) or base.checkpoint (given weights), not both")

    @property
    def baseline_arm(self) -> str:
        return self.baseline or self.arms[0].name

    def controls(self) -> dict[str, str]:
        """Each compared arm's control: its own, or the baseline (the baseline has none)."""
        return {
            arm.name: arm.control or self.baseline_arm
            for arm in self.arms
            if arm.control or arm.name != self.baseline_arm
        }


def _check_names(kind: str, names: list[str], reserved: tuple[str, ...], where: str) -> None:
    """Arm or evaluation names must be distinct plain folder names that nothing else in their folder uses."""
    for name in names:
        if not NAME.fullmatch(name) or names.count(name) > 1:
            shown = name if len(name) <= 40 else f"{name[:40]}... ({len(name)} characters)"
            raise ValueError(
                f"{kind} name {shown!r}: expected distinct folder names of 1 to 100 letters, digits, '_', '.', "
                "'+', '-', not starting with a dot"
            )
        taken = next((pattern for pattern in reserved if fnmatch.fnmatchcase(name, pattern)), None)
        if taken:
            raise ValueError(
                f"{kind} name {name!r}: {where} holds {taken!r} of its own; choose another name (reserved: "
                f"{', '.join(reserved)})"
            )


def load_study(path: str | Path, overrides: list[str] = ()) -> tuple[StudyConfig, Path]:
    """The study of a file (with dotted overrides) and the folder its config paths are relative to."""
    study = load_config(StudyConfig, path, overrides, interpolations=False)
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
    base_seed: int = -1  # the base it continues, with several bases; -1: the one base (or none)
    _resolved: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def schema(self) -> type:
        return PretrainConfig if self.kind == "pretrain" else FinetuneConfig

    @property
    def replicate(self) -> str:
        """Which replicate of its arm the run belongs to: `s<seed>`, or `b<base seed>-s<seed>`."""
        return f"s{self.seed}" if self.base_seed < 0 else f"b{self.base_seed}-s{self.seed}"

    def resolved(self):
        """The run's typed config: what `guidedmae pretrain/finetune CONFIG OVERRIDES` would run (loaded
        once: a study reads it to check leaks and changes)."""
        if self._resolved is None:
            self._resolved = load_config(self.schema, self.config, self.overrides)
        return self._resolved

    def out_dir(self) -> Path:
        return Path(self.override("out_dir"))

    def override(self, key: str, default: str = "") -> str:
        """The value the study sets for `key` (out_dir, model.init, ...), or default."""
        return dict(item.split("=", 1) for item in self.overrides).get(key, default)

    def status(self) -> str:
        """new | interrupted | finished (stale_runs says which of these differ from the plan)."""
        out = self.out_dir()
        if (out / RESULTS).is_file():
            return "finished"
        return "interrupted" if list(out.glob("checkpoint-*.pt")) else "new"

    def config_changes(self) -> list[str]:
        """What differs between the config the run folder was written with and the planned one (nothing
        when the folder holds no config yet).

        The written config is read through today's schema, so keys added since (at their defaults) are
        no change; how a run was executed (threads, resume) is none either.
        """
        written = self.out_dir() / "config.yaml"
        if not written.is_file():
            return []
        try:
            saved = config_to_dict(load_config(self.schema, written))
        except ConfigError as error:
            return [f"{written} no longer loads: {error}"]
        planned = config_to_dict(self.resolved())
        return [line for line in config_differences(saved, planned) if not line.startswith(EXECUTION_KEYS)]


def _path(base: Path, name: str) -> str:
    return str((base / name).resolve())


def _base_runs(study: StudyConfig, folder: Path, out: Path) -> dict[int, Run]:
    """The base runs by base seed (-1: the one base run with its config's seed)."""
    if not study.base.config:
        return {}
    config, overrides = _path(folder, study.base.config), study.base.overrides
    if not study.base.seeds:
        return {-1: Run(BASE, "pretrain", config, [*overrides, f"out_dir={out / BASE}", "resume=auto"], [])}
    runs = {}
    for seed in study.base.seeds:
        name = f"{BASE}/seed-{seed}"
        run_overrides = [*overrides, f"seed={seed}", f"out_dir={out / name}", "resume=auto"]
        runs[seed] = Run(name, "pretrain", config, run_overrides, [], seed=seed, base_seed=seed)
    return runs


def _arm_runs(
    study: StudyConfig, arm: ArmSpec, folder: Path, out: Path, base: Run | None, base_seed: int, seed: int
) -> list[Run]:
    """An arm's continuation of one base with one seed, and its evaluations."""
    replicate = f"seed-{seed}" if base_seed < 0 else f"base-{base_seed}/seed-{seed}"
    arm_dir = f"{arm.name}/{replicate}"
    if base:
        weights = str(base.out_dir() / LAST)
    else:
        weights = _path(folder, study.base.checkpoint) if study.base.checkpoint else ""
    depends = [base.name] if base else []
    runs = []
    config = arm.config or study.arm_defaults.config
    if arm.pretrain and config:
        init = [f"model.init={weights}"] if weights else []
        overrides = [
            *init,
            *study.arm_defaults.overrides,
            *arm.overrides,
            f"seed={seed}",
            f"out_dir={out / arm_dir}",
            "resume=auto",
        ]
        runs.append(
            Run(
                arm_dir,
                "pretrain",
                _path(folder, config),
                overrides,
                depends,
                arm.name,
                seed,
                base_seed=base_seed,
            )
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
            config = _path(folder, spec.config)
            runs.append(
                Run(
                    name,
                    "finetune",
                    config,
                    overrides,
                    depends,
                    arm.name,
                    seed,
                    spec.name,
                    fraction,
                    base_seed,
                )
            )
    return runs


def plan(study: StudyConfig, folder: Path) -> list[Run]:
    """Every run of the study, each after the runs it depends on. Two runs that would share a folder
    (fractions that print alike, say) are refused, naming both."""
    out = Path(study.out_dir).resolve()
    bases = _base_runs(study, folder, out)
    runs = list(bases.values())
    for arm in study.arms:
        for base_seed in bases or [-1]:
            for seed in study.seeds:
                runs += _arm_runs(study, arm, folder, out, bases.get(base_seed), base_seed, seed)
    folders: dict[Path, Run] = {}
    for run in runs:
        other = folders.setdefault(run.out_dir(), run)
        if other is not run:
            raise ValueError(
                f"two runs of the study share the folder {run.out_dir()}: {other.evaluation or other.name} "
                f"(fraction {other.fraction:.10g}) and {run.evaluation or run.name} (fraction "
                f"{run.fraction:.10g}); give them distinct evaluation names or fractions"
            )
    return runs


def stale_runs(runs: list[Run]) -> dict[str, list[str]]:
    """Started runs (finished or interrupted) that differ from the plan, with why: their own config
    changed, or a run they start from is stale or has no finished run (moved aside or removed since): either
    way its weights will change when it runs again."""
    status = {run.name: run.status() for run in runs}
    stale: dict[str, list[str]] = {}
    for run in runs:  # in plan order: every run after the runs it depends on
        if status[run.name] == "new":
            continue
        reasons = run.config_changes()
        for name in run.depends_on:
            if name in stale:
                reasons.append(f"starts from {name}, which is stale")
            elif status[name] != "finished":
                what = "missing" if status[name] == "new" else "not finished"
                reasons.append(f"starts from {name}, which is {what}: it will be trained anew")
        if reasons:
            stale[run.name] = reasons
    return stale
