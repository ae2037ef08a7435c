"""A study run in parts on several machines and merged: the units accumulate; parts of another plan, of
other code or sharing a replicate are refused."""

import json

import pytest

from guidedmae.cli import main
from guidedmae.study.runner import load_planned
from guidedmae.study.tables import collect
from tests.test_study import write_study


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Two parts of the tiny study (two arms, no evaluation), seeds 0 and 1, each run to the end."""
    root = tmp_path_factory.mktemp("parts")
    study = write_study(root)
    folders = {}
    for seed in (0, 1):
        folders[seed] = root / f"part-{seed}"
        assert (
            main(["study", str(study), f"seeds=[{seed}]", "evaluations=[]", f"out_dir={folders[seed]}"]) == 0
        )
    return study, folders


def test_two_parts_merge_into_one_study_with_both_replicates(parts, tmp_path, capsys):
    _, folders = parts
    merged = tmp_path / "merged"
    capsys.readouterr()
    assert main(["study", str(folders[0]), str(folders[1]), "--merge", str(merged)]) == 0
    assert f"merged into {merged}" in capsys.readouterr().out
    study, runs = load_planned(merged)
    assert study.seeds == [0, 1] and all(run.status() == "finished" for run in runs)
    tables = collect(study, runs)
    assert tables.replicates == ["s0", "s1"]
    loss = tables.values["pretrain: eval_random/loss"]
    for seed in (0, 1):  # the merged values are the parts' own
        part = json.loads((folders[seed] / "attention" / f"seed-{seed}" / "results.json").read_text())
        assert loss["attention"][f"s{seed}"] == part["metrics"]["eval_random/loss"]
    assert "(2)" in (merged / "study.md").read_text()  # every cell over 2 replicates
    # The merged folder is a study folder: reported, and a study run on it finds nothing to do.
    assert main(["report", str(merged)]) == 0
    assert main(["study", str(merged / "study.yaml"), "evaluations=[]", "--dry-run"]) == 0
    assert "0 to do" in capsys.readouterr().out


def test_parts_of_another_plan_or_code_or_sharing_a_replicate_are_refused(parts, tmp_path, capsys):
    study, folders = parts
    merged = tmp_path / "merged"
    # A third part that reran seed 0: one replicate finished twice.
    again = tmp_path / "again"
    assert main(["study", str(study), "seeds=[0]", "evaluations=[]", f"out_dir={again}"]) == 0
    capsys.readouterr()
    assert main(["study", str(folders[0]), str(again), "--merge", str(merged)]) == 1
    assert "random/seed-0 is finished in both" in capsys.readouterr().err
    # Another plan: an arm's overrides changed.
    changed = tmp_path / "changed"
    text = study.read_text().replace("masking.strategy=attention]", "masking.strategy=block]")
    other = tmp_path / "other.yaml"
    other.write_text(text)
    (tmp_path / "tiny.yaml").write_text((study.parent / "tiny.yaml").read_text())
    assert main(["study", str(other), "seeds=[2]", "evaluations=[]", f"out_dir={changed}"]) == 0
    capsys.readouterr()
    assert main(["study", str(folders[0]), str(changed), "--merge", str(merged)]) == 1
    error = capsys.readouterr().err
    assert "are not parts of one study: arms" in error and "only the replicates" in error
    # Other code: the fingerprint a part records differs.
    provenance = folders[1] / "provenance.json"
    original = provenance.read_text()
    recorded = json.loads(original)
    recorded["codes"][0]["code"] = "0" * 64
    provenance.write_text(json.dumps(recorded))
    try:
        assert main(["study", str(folders[0]), str(folders[1]), "--merge", str(merged)]) == 1
        assert "were run by different code" in capsys.readouterr().err
    finally:
        provenance.write_text(original)
    assert not merged.exists() or not any(merged.iterdir())  # nothing merged by a refused merge


def test_a_random_init_arm_evaluates_random_weights_whatever_the_base(tmp_path):
    from guidedmae.study.plan import load_study, plan

    study_file = write_study(tmp_path)
    text = study_file.read_text().replace(
        "arms:\n",
        "arms:\n  - {name: floor, pretrain: false, random_init: true}\n  - {name: base_only, pretrain: false}\n",
    )
    study_file.write_text(text)
    study, folder = load_study(study_file)
    runs = {run.name: run for run in plan(study, folder)}
    assert (
        runs["floor/seed-0/probe"].override("model.init") == ""
        and runs["floor/seed-0/probe"].depends_on == []
    )
    assert runs["base_only/seed-0/probe"].override("model.init").endswith("base/checkpoint-last.pt")
    study_file.write_text(text.replace("pretrain: false, random_init: true", "random_init: true"))
    with pytest.raises(
        ValueError, match="arms floor: random_init=true evaluates random weights; it needs pretrain: false"
    ):
        load_study(study_file)
