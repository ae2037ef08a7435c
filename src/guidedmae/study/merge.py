"""Merging the parts of one study run on several machines, so that its units accumulate.

    merge_studies([part_a, part_b], out)   # part_*: study folders; out: new, empty, or one of the parts

Each part is the same study file run with other replicates (other `base.seeds` or `seeds`, say
`base.seeds=[0,1,2,3]` on one machine and `base.seeds=[4,5,6,7]` on another). The merge refuses parts
whose plan differs beyond those replicate lists (naming the first key that differs), parts whose runs
come from different code (the fingerprints of the package's source every study folder records: a part
whose runs span two versions is refused too), and a replicate finished in two parts. It then assembles one study folder: every finished run of every part under its
own name (hard links where the file system allows, else copies; with a single base, which every part
trains again, the first part's), the study file with the union of the replicates, and the tables. Parts
split by `base.seeds` keep every run; split by `seeds` under one base, the base is the first part's. The merged folder is an ordinary study folder: `guidedmae report` reads it,
`guidedmae study` on it runs what is not done, and it can be merged again.
"""

import copy
import hashlib
import os
import shutil
from pathlib import Path

from guidedmae.config import config_differences, config_to_dict, config_to_yaml
from guidedmae.infra.files import atomic_write, lock_folder, make_folder, read_json, write_json
from guidedmae.infra.version import package_version
from guidedmae.study.plan import STUDY_FILE, Run, StudyConfig, load_study, plan
from guidedmae.study.tables import collect, write_tables

__all__ = ["PROVENANCE", "code_fingerprint", "merge_studies", "write_provenance"]

PROVENANCE = "provenance.json"
# What may differ between the parts of one study: which replicates each ran, and where.
REPLICATE_KEYS = ("out_dir:", "seeds:", "base.seeds:")


def code_fingerprint() -> str:
    """sha256 over the package's Python sources (paths and contents): runs of two parts are comparable
    only when the code that trained and scored them is the same."""
    root = Path(__file__).resolve().parents[1]  # the guidedmae package
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def write_provenance(study_dir: Path) -> str | None:
    """Record the code running in a study folder (guidedmae's version and the source fingerprint) among
    those its runs came from; returns the earlier code when it differs (the study then mixes versions)."""
    path = study_dir / PROVENANCE
    current = {"guidedmae": package_version(), "code": code_fingerprint()}
    seen = read_json(path).get("codes", []) if path.is_file() else []
    if current not in seen:
        write_json(path, {"codes": [*seen, current]})
    return (
        None if not seen or current in seen else f"guidedmae {seen[-1]['guidedmae']} {seen[-1]['code'][:12]}"
    )


def _load_part(folder: Path) -> tuple[StudyConfig, list[Run], dict]:
    folder = folder.resolve()
    if not (folder / STUDY_FILE).is_file() or not (folder / PROVENANCE).is_file():
        raise FileNotFoundError(
            f"{folder} is not a study folder that can be merged: it holds no {STUDY_FILE} and {PROVENANCE} "
            "(written when `guidedmae study` runs)"
        )
    study, study_folder = load_study(folder / STUDY_FILE, [f"out_dir={folder}"])
    return study, plan(study, study_folder), read_json(folder / PROVENANCE)


def _code(folder: Path, provenance: dict) -> dict:
    """The one code a part's runs come from; refused when they come from several."""
    codes = provenance.get("codes", [])
    if len(codes) != 1:
        raise ValueError(
            f"{folder}: its runs come from {len(codes)} versions of the code ({PROVENANCE}); a part must "
            "come from one"
        )
    return codes[0]


def _merged_study(parts: list[tuple[Path, StudyConfig, dict]], out: Path) -> StudyConfig:
    """The parts' common plan with the union of their replicates; refused where they differ otherwise."""
    (first_dir, first, first_code), *others = parts
    reference = config_to_dict(first)
    for folder, study, code in others:
        differences = [
            line
            for line in config_differences(reference, config_to_dict(study))
            if not line.startswith(REPLICATE_KEYS)
        ]
        if differences:
            raise ValueError(
                f"{folder} and {first_dir} are not parts of one study: {differences[0]} (only the replicates, "
                "seeds and base.seeds, may differ)"
            )
        if code != first_code:
            raise ValueError(
                f"{folder} and {first_dir} were run by different code (guidedmae {code.get('guidedmae')} "
                f"{str(code.get('code'))[:12]} against {first_code.get('guidedmae')} "
                f"{str(first_code.get('code'))[:12]}): their runs are not comparable"
            )
    merged = copy.deepcopy(first)
    merged.out_dir = str(out)
    merged.seeds = sorted({seed for _, study, _ in parts for seed in study.seeds})
    merged.base.seeds = sorted({seed for _, study, _ in parts for seed in study.base.seeds})
    return merged


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, target)


def merge_studies(part_folders: list[str | Path], out: str | Path) -> list[Path]:
    """Merge the study folders `part_folders` into `out` (see the module docstring); returns the tables
    and figures written."""
    if len(part_folders) < 2:
        raise ValueError("--merge needs at least two study folders to merge")
    out = Path(out).resolve()
    loaded = [(Path(folder).resolve(), *_load_part(Path(folder))) for folder in part_folders]
    if out.exists() and any(out.iterdir()) and out not in [folder for folder, *_ in loaded]:
        raise FileExistsError(f"--merge {out}: expected a new or empty folder, or one of the parts")
    codes = [(folder, study, _code(folder, provenance)) for folder, study, _, provenance in loaded]
    study = _merged_study(codes, out)
    owner: dict[str, Path] = {}  # run name -> the part whose finished run it is
    for folder, _, runs, _ in loaded:
        for run in runs:
            if run.status() != "finished":
                continue
            if run.name in owner and not run.arm:
                continue  # the one base every part trains again: the first part's is kept
            if run.name in owner and owner[run.name] != folder:
                raise ValueError(
                    f"{run.name} is finished in both {owner[run.name]} and {folder}: a replicate belongs to "
                    "one part (give each machine other seeds or base.seeds)"
                )
            owner[run.name] = folder
    run_names = {run.name for _, _, runs, _ in loaded for run in runs}

    def other_runs(folder: str, names: list[str]) -> list[str]:  # each run copies its own files only
        return [
            name for name in names if any(str(Path(folder, name)).endswith(f"/{run}") for run in run_names)
        ]

    out = make_folder(out, "--merge")
    with lock_folder(out, "study", "--merge"):
        for name, folder in sorted(owner.items()):
            if folder != out:
                shutil.copytree(
                    folder / name,
                    out / name,
                    ignore=other_runs,
                    copy_function=_link_or_copy,
                    dirs_exist_ok=True,
                )
        atomic_write(out / STUDY_FILE, lambda file: file.write(config_to_yaml(study).encode()))
        write_json(out / PROVENANCE, {"codes": [codes[0][2]]})
        return write_tables(collect(study, plan(study, out)), out)
