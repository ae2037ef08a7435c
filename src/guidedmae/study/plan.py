"""A study file and the runs it plans: base pretraining, arms x seeds, evaluations x fractions.

    study, folder = load_study("reference_cpu", ["seeds=[0,1]"])
    for run in plan(study, folder): print(run.name, run.kind, run.depends_on, run.status())

Every run is an ordinary run of `guidedmae pretrain` or `guidedmae finetune`, in its own folder under
the study's out_dir: `base/`, `<arm>/seed-<k>/`, `<arm>/seed-<k>/<evaluation>[-f<fraction>]/`. With
several base seeds (`base.seeds`), every base is a replicate of its own: `base/seed-<b>/` and
`<arm>/base-<b>/seed-<k>/...`, every arm continuing every base. A config in a study file is a shipped
config's name (`demo`, `synthetic_semseg_probe`) or a path relative to the file. A run is finished when
its folder holds results.json; it is interrupted when it holds
checkpoints but no results.json (it resumes: every planned run has resume=auto). A run whose config
differs from the plan, or that starts from a run that does, is stale: refused unless asked to redo it.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from guidedmae.config import (
    ConfigError,
    FinetuneConfig,
    PretrainConfig,
    config_differences,
    config_to_dict,
    load_config,
)
from guidedmae.config.presets import find_config
from guidedmae.engine.job import RESULTS
from guidedmae.infra.checkpoints import LAST

__all__ = ["LAUNCHERS", "STUDY_FILE", "Run", "StudyConfig", "load_study", "plan", "stale_runs"]

# How a run is executed, not what it computes: a finished run that differs only in these is not redone.
EXECUTION_KEYS = ("resume:", "run.threads:")
STUDY_FILE = "study.yaml"  # the resolved study, in its out_dir: what `guidedmae report STUDY_DIR` reads

LAUNCHERS = ("local", "slurm", "debug")
BASE = "base"
# Arm and evaluation names are folder names: no separators, never '.', '..' or hidden.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


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
    # A check of the set-up (does continuing move anything? does the lr matter?), not one of the study's
    # questions: its test stands alone (uncorrected) and its spread stays out of the power of the design.
    sanity: bool = False
    # With pretrain: false, evaluate random weights instead of the base's: the floor a downstream metric
    # must rise well above for the benchmark to have room (the headroom check).
    random_init: bool = False


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
    config_kind: ClassVar[str] = "study"  # the shipped configs it is loaded from by name
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
        bad = [name for name in names if not NAME.fullmatch(name) or name == BASE or names.count(name) > 1]
        if bad:
            raise ValueError(
                f"arm names {bad}: expected distinct folder names (letters, digits, '_', '.', '+', '-', not "
                f"starting with a dot) other than '{BASE}'"
            )
        if self.baseline and self.baseline not in names:
            raise ValueError(f"baseline={self.baseline!r}; expected one of the arms {names}")
        for arm in self.arms:
            if arm.control and (arm.control not in names or arm.control == arm.name):
                raise ValueError(f"arms {arm.name}: control={arm.control!r}; expected another arm of {names}")
            if arm.random_init and arm.pretrain:
                raise ValueError(
                    f"arms {arm.name}: random_init=true evaluates random weights; it needs pretrain: false"
                )
        for key, seeds in (("seeds", self.seeds), ("base.seeds", self.base.seeds)):
            if len(set(seeds)) != len(seeds) or (seeds and min(seeds) < 0):
                raise ValueError(f"{key}={list(seeds)}; expected distinct non-negative seeds")
        if not self.seeds:
            raise ValueError("seeds=[]; expected at least one seed")
        if self.base.seeds and not self.base.config:
            raise ValueError(f"base.seeds={list(self.base.seeds)} needs base.config (the base run to repeat)")
        evaluations = [spec.name for spec in self.evaluations]
        bad = [name for name in evaluations if not NAME.fullmatch(name) or evaluations.count(name) > 1]
        if bad:
            raise ValueError(
                f"evaluation names {bad}: expected distinct folder names (letters, digits, '_', '.', '+', '-', "
                "not starting with a dot)"
            )
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


def load_study(path: str | Path, overrides: list[str] = ()) -> tuple[StudyConfig, Path]:
    """The study of a file or a shipped study's name (with dotted overrides) and the folder its config
    paths are relative to."""
    path = find_config("study", path)
    study = load_config(StudyConfig, path, overrides, interpolations=False)
    return study, path.resolve().parent


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
            saved = _relocated(config_to_dict(load_config(self.schema, written)), self)
        except ConfigError as error:
            return [f"{written} no longer loads: {error}"]
        planned = config_to_dict(self.resolved())
        return [line for line in config_differences(saved, planned) if not line.startswith(EXECUTION_KEYS)]


def _relocated(saved: dict, run: Run) -> dict:
    """A run's saved config as if written where the study now is: the paths inside the study folder
    (out_dir, model.init of a run that continues another) follow a study folder moved or merged elsewhere."""
    written_at, now_at = Path(saved["out_dir"]), run.out_dir()
    if written_at.parts[-len(Path(run.name).parts) :] != Path(run.name).parts:
        return saved
    old_root = Path(*written_at.parts[: -len(Path(run.name).parts)])
    new_root = Path(*now_at.parts[: -len(Path(run.name).parts)])
    init = saved.get("model", {}).get("init")
    if init and Path(init).is_relative_to(old_root):
        saved["model"]["init"] = str(new_root / Path(init).relative_to(old_root))
    saved["out_dir"] = str(now_at)
    return saved


def _config(folder: Path, name: str, kind: str) -> str:
    """A study's config: a file relative to the study file, or a shipped config's name."""
    return str(find_config(kind, name, relative_to=folder).resolve())


def _path(base: Path, name: str) -> str:
    return str((base / name).resolve())


def _base_runs(study: StudyConfig, folder: Path, out: Path) -> dict[int, Run]:
    """The base runs by base seed (-1: the one base run with its config's seed)."""
    if not study.base.config:
        return {}
    config, overrides = _config(folder, study.base.config, "pretrain"), study.base.overrides
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
    if arm.random_init:
        weights, base = "", None
    elif base:
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
                _config(folder, config, "pretrain"),
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
            config = _config(folder, spec.config, "finetune")
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
    changed, or a run they start from is stale (its weights will change when it runs again)."""
    stale: dict[str, list[str]] = {}
    for run in runs:  # in plan order: every run after the runs it depends on
        if run.status() == "new":
            continue
        reasons = run.config_changes()
        reasons += [f"starts from {name}, which is stale" for name in run.depends_on if name in stale]
        if reasons:
            stale[run.name] = reasons
    return stale
