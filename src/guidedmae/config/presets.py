"""The configs shipped inside the package, reachable by name wherever a config file is taken.

    find_config("pretrain", "demo")            # guidedmae/configs/pretrain/demo.yaml
    find_config("pretrain", "my/run.yaml")     # a file: a path always wins over a name
    list_configs("study")                      # {name: what it is for}

Kinds: pretrain, finetune and study. A name is a file's stem in its kind's folder; an unknown name is a
one-line error with the close matches. Study files and configs refer to each other by name, so they work
from an installed wheel as from a clone.
"""

import difflib
import sys
from pathlib import Path

__all__ = [
    "CONFIG_KINDS",
    "CONFIG_ROOT",
    "config_description",
    "find_config",
    "list_configs",
    "shipped_config",
]

CONFIG_ROOT = Path(__file__).resolve().parents[1] / "configs"
CONFIG_KINDS = ("pretrain", "finetune", "study")
_noted: set[str] = set()  # names a file shadowed, said once per process


def list_configs(kind: str) -> dict[str, str]:
    """{name: its description} of the shipped configs of `kind`, sorted by name."""
    if kind not in CONFIG_KINDS:
        raise ValueError(f"config kind {kind!r}; expected one of {CONFIG_KINDS}")
    return {path.stem: config_description(path) for path in sorted((CONFIG_ROOT / kind).glob("*.yaml"))}


DESCRIPTION_WIDTH = 100  # characters of a listing's line


def config_description(path: Path) -> str:
    """What a config is for, in one line: the start of its leading comment, up to its first colon or
    sentence end, cut at a word to fit DESCRIPTION_WIDTH."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    for stop in (": ", ". ", "; "):
        text = text.split(stop)[0]
    if text.count("(") > text.count(")"):  # cut inside a parenthesis: leave it out
        text = text[: text.rfind("(")]
    text = text.rstrip(".: ") or "(no description)"
    if len(text) <= DESCRIPTION_WIDTH:
        return text
    return text[: DESCRIPTION_WIDTH - 3].rsplit(" ", 1)[0] + "..."


def _packaged(name: str) -> dict[str, Path]:
    """{kind: path} of the shipped configs called `name`."""
    paths = {kind: CONFIG_ROOT / kind / f"{name}.yaml" for kind in CONFIG_KINDS}
    return {kind: path for kind, path in paths.items() if path.is_file()}


def shipped_config(name: str) -> Path | None:
    """The shipped config called `name`, whatever its kind (names are unique across kinds), or None."""
    return next(iter(_packaged(name).values()), None)


def close_names(name: str, kinds: tuple[str, ...] = CONFIG_KINDS) -> list[str]:
    """Shipped configs' names (of `kinds`, by default every kind) close to `name`."""
    names = [path.stem for kind in kinds for path in (CONFIG_ROOT / kind).glob("*.yaml")]
    return difflib.get_close_matches(name, names, n=4, cutoff=0.5)


def find_config(kind: str, name: str | Path, relative_to: Path | None = None) -> Path:
    """The config file `name` stands for: a file (relative to `relative_to`, else the working folder), or
    a shipped config of `kind` by name. A file that shares a shipped config's name wins, said once."""
    if kind not in CONFIG_KINDS:
        raise ValueError(f"config kind {kind!r}; expected one of {CONFIG_KINDS}")
    path = Path(name)
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    packaged = _packaged(str(name)) if "/" not in str(name) and not str(name).endswith(".yaml") else {}
    if path.is_file():
        if kind in packaged and str(name) not in _noted:
            _noted.add(str(name))
            print(
                f"note: {path} is a file and also a shipped {kind} config's name; the file is read",
                file=sys.stderr,
            )
        return path
    if kind in packaged:
        return packaged[kind]
    if packaged:
        other = next(iter(packaged))
        raise ValueError(f"{name!r} is a shipped {other} config, not a {kind} config")
    if str(name).endswith((".yaml", ".yml")) or "/" in str(name):
        raise FileNotFoundError(f"config file not found: {path}")
    close = close_names(str(name), (kind,))
    hint = f"close: {', '.join(close)}" if close else f"`guidedmae configs {kind}` lists them"
    raise ValueError(f"no {kind} config file or name {name!r} ({hint})")
