"""A study file: its schema (the base, the arms, the evaluations, the seeds, the margins, how runs are
launched), the names its folders may take, and loading it (a file, or a shipped study's name).

    study, folder = load_study("reference_cpu", ["seeds=[0,1]"])   # the study, and where its paths start
"""

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from guidedmae.config import load_config
from guidedmae.config.presets import find_config
from guidedmae.engine.job import RESULTS
from guidedmae.engine.pretrain import PICTURES
from guidedmae.infra.fields import check_seed
from guidedmae.infra.run_log import METRICS, TENSORBOARD

__all__ = [
    "BASE",
    "LAUNCHERS",
    "LOGS",
    "REPLACED",
    "STUDY_FILE",
    "ArmSpec",
    "EvaluationSpec",
    "StudyConfig",
    "load_study",
]

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
        _check_names("arm", names, STUDY_NAMES, "the study's folder")
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


def load_study(path: str | Path, overrides: Sequence[str] = ()) -> tuple[StudyConfig, Path]:
    """The study of a file or a shipped study's name (with dotted overrides) and the folder its config
    paths are relative to."""
    path = find_config("study", path)
    study = load_config(StudyConfig, path, overrides, interpolations=False)
    return study, path.resolve().parent
