"""The runs a study file plans: base pretraining, arms x seeds, evaluations x fractions (the file itself:
guidedmae.study.study_file).

    study, folder = load_study("reference_cpu", ["seeds=[0,1]"])
    for run in plan(study, folder): print(run.name, run.kind, run.depends_on, run.status())

Every run is an ordinary run of `guidedmae pretrain` or `guidedmae finetune`, in its own folder under
the study's out_dir: `base/`, `<arm>/seed-<k>/`, `<arm>/seed-<k>/<evaluation>[-f<fraction>]/`. With
several base seeds (`base.seeds`), every base is a replicate of its own: `base/seed-<b>/` and
`<arm>/base-<b>/seed-<k>/...`, every arm continuing every base. A config in a study file is a shipped
config's name (`demo`, `synthetic_semseg_probe`) or a path relative to the file. A run is finished when
its folder holds results.json; it is interrupted when it holds checkpoints but no results.json (it
resumes: every planned run has resume=auto). A started run whose config differs from the plan, or that
starts from a run that is stale or no longer finished (moved aside, removed), is stale: refused unless
asked to redo it.
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
from guidedmae.config.presets import find_config
from guidedmae.engine.job import RESULTS
from guidedmae.infra.checkpoints import LAST
from guidedmae.study.study_file import (
    BASE,
    LAUNCHERS,
    LOGS,
    REPLACED,
    STUDY_FILE,
    ArmSpec,
    StudyConfig,
    load_study,
)

__all__ = [
    "LAUNCHERS",
    "LOGS",
    "REPLACED",
    "STUDY_FILE",
    "Run",
    "StudyConfig",
    "load_study",
    "plan",
    "stale_runs",
]

# How a run is executed, not what it computes: a finished run that differs only in these is not redone.
EXECUTION_KEYS = ("resume:", "run.threads:")


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
    _resolved: PretrainConfig | FinetuneConfig | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def schema(self) -> type[PretrainConfig] | type[FinetuneConfig]:
        return PretrainConfig if self.kind == "pretrain" else FinetuneConfig

    @property
    def replicate(self) -> str:
        """Which replicate of its arm the run belongs to: `s<seed>`, or `b<base seed>-s<seed>`."""
        return f"s{self.seed}" if self.base_seed < 0 else f"b{self.base_seed}-s{self.seed}"

    def resolved(self) -> PretrainConfig | FinetuneConfig:
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
