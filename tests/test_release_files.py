"""The release files agree with the package: one version (guidedmae.__version__) in the changelog's newest
entry and the citation file, one release date in both, and the licence pyproject names."""

import re
from pathlib import Path

import yaml

import guidedmae

ROOT = Path(__file__).resolve().parents[1]


def newest_changelog_entry() -> tuple[str, str]:
    """(version, date) of the first `## [X.Y.Z] - YYYY-MM-DD` heading of CHANGELOG.md."""
    match = re.search(
        r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", (ROOT / "CHANGELOG.md").read_text(), re.M
    )
    assert match, "CHANGELOG.md has no '## [X.Y.Z] - YYYY-MM-DD' entry"
    return match.group(1), match.group(2)


def test_the_changelog_and_the_citation_name_the_package_version():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    version, date = newest_changelog_entry()
    assert version == guidedmae.__version__
    assert (citation["version"], str(citation["date-released"])) == (version, date)


def test_the_citation_file_cites_the_methods_it_builds_on():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    titles = " / ".join(reference["title"] for reference in citation["references"])
    for method in (
        "MultiMAE",
        "Attention-Guided Masked",
        "Hard Patches",
        "Masked Autoencoders Are",
        "ColorMAE",
    ):
        assert method in titles
    assert all(reference["authors"] and reference["year"] for reference in citation["references"])


def test_the_licence_is_the_one_pyproject_names():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'license = { text = "MIT" }' in pyproject
    assert (
        (ROOT / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2026 the guidedmae authors")
    )
