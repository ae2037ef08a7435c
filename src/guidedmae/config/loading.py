"""Loading configs: YAML files merged over the typed defaults, then dotted `key=value` overrides.

    config = load_config(PretrainConfig, "demo", ["optim.blr=2e-4"])
    config = load_config(FinetuneConfig, "runs/mine.yaml", ["model.init=..."])

A config is a file, or the name of a config shipped in the package (`guidedmae.config.presets`; the
schema's `config_kind` says which folder): `load_config(PretrainConfig, "demo")`. `extends: other.yaml` at
the top of a file merges that file first (path relative to the file, or a shipped config's name). A value
`???` is required: loading fails until an override sets it. An unknown key, a value of the wrong type,
an empty or non-finite value, a missing required value or a value out of range is a ConfigError naming
the key and where it came from, raised when the config is loaded: before anything is built.

Values are YAML, in files and overrides alike; an override whose value YAML cannot read (`seed=[`,
`out_dir=*x`) is a ConfigError naming it. Interpolations (`${data.root}/val`, `${oc.env:VAR}`) in a config
file are resolved when the config is loaded: the resolved value is what the run's config.yaml, its
checkpoints and its trackers (W&B, MLflow) receive, so never interpolate a secret; a variable that is
not set is a ConfigError naming the key. An override is never resolved: a value that holds `${` once
YAML has decoded it (however it was escaped: `\x24{`, `\u0024{`, ...) is refused, as is one in a saved
config or in a file loaded with `interpolations=False` (study files, whose overrides reach every run).
The shell expands `$VAR` where the value can be seen; an override shows what the run will store.
"""

import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from guidedmae.config.presets import find_config, shipped_config
from guidedmae.data.modalities import Modality, declare_all
from guidedmae.infra.files import atomic_write

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "ConfigError",
    "config_differences",
    "config_to_dict",
    "config_to_yaml",
    "load_config",
    "load_modalities",
    "save_config",
]

EXTENDS = "extends"
# What starts an OmegaConf interpolation (`${key}`, `${oc.env:VAR}`, `${oc.decode:...}`) in a decoded string:
# OmegaConf resolves nothing else, so a string without it is taken as written.
INTERPOLATION = "${"


class ConfigError(ValueError):
    """A config file or override that does not fit the config's schema."""


Config = TypeVar("Config", bound="DataclassInstance")


def _describe(error: Exception) -> str:
    key = getattr(error, "full_key", None)
    message = str(getattr(error, "msg", None) or error).splitlines()[0]
    if "not in" in message and key:
        return f"unknown key '{key}' ({message})"
    return f"'{key}': {message}" if key else message


def _load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    """A YAML file as a DictConfig, with the files it `extends` merged underneath it."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: '{EXTENDS}' forms a cycle: {' -> '.join(map(str, (*seen, path)))}")
    name = path.stem if path.suffix in (".yaml", ".yml") else path.name
    if not path.is_file():
        path = shipped_config(name) or path  # `extends: demo`: a shipped config by name
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    parent = loaded.pop(EXTENDS, None)
    if parent is None:
        return loaded
    return _merge(_load_yaml(path.parent / str(parent), (*seen, path)), loaded)


def _merge(*configs: DictConfig | Mapping) -> DictConfig:
    """OmegaConf.merge of mappings, which is a mapping (its signature admits lists too)."""
    return cast(DictConfig, OmegaConf.merge(*configs))


@functools.cache
def _defaults(schema: type) -> DictConfig:
    """The schema's typed defaults, built once: merges never change their inputs, and building them is
    a good part of a load (a study resolves every run's config)."""
    return OmegaConf.structured(schema)


def _check_finite(values: object, source: str, prefix: str = "") -> None:
    """No NaN or infinity anywhere in a config: a learning rate of inf trains nothing useful."""
    items = (
        values.items() if isinstance(values, dict) else enumerate(values) if isinstance(values, list) else ()
    )
    for key, value in items:
        name = f"{prefix}{key}" if isinstance(values, dict) else f"{prefix[:-1]}[{key}]"
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{source}: {name}={value}; expected a finite number")
        _check_finite(value, source, f"{name}.")


def _interpolation(value: object, prefix: str = "") -> tuple[str, str] | None:
    """(key, text) of the first string in a decoded value (keys included) that OmegaConf would resolve."""
    if isinstance(value, str):
        return (prefix.rstrip("."), value) if INTERPOLATION in value else None
    if isinstance(value, dict):
        items = [(f"{prefix}{key}", item) for key, item in value.items()]
        keys = [(f"{prefix}{key}", str(key)) for key in value]
    elif isinstance(value, list):
        items, keys = [(f"{prefix.rstrip('.')}[{index}]", item) for index, item in enumerate(value)], []
    else:
        return None
    for name, text in keys:
        if INTERPOLATION in text:
            return name, text
    for name, item in items:
        found = _interpolation(item, f"{name}.")
        if found:
            return found
    return None


def _refuse_interpolations(value: object, source: str, why: str) -> None:
    found = _interpolation(OmegaConf.to_container(value) if isinstance(value, DictConfig) else value)
    if found:
        key, text = found
        raise ConfigError(
            f"{source}: {key}={text!r} holds an interpolation ('${{...}}'), which is never resolved here: {why}"
        )


def _parse_override(item: str) -> DictConfig:
    """One `key=value` override as a config, its value read as YAML and taken as written; a ConfigError
    naming it if YAML cannot read it or if, decoded, it holds an interpolation."""
    try:
        parsed = OmegaConf.from_dotlist([item])
    except yaml.YAMLError as error:
        key, value = item.split("=", 1)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(
            f"command line {item!r}: {value!r} is not a valid value (YAML: {problem}); "
            f"to give it as text, quote it within the override: \"{key}='{value}'\""
        ) from error
    except (OmegaConfBaseException, TypeError) as error:
        raise ConfigError(f"command line {item!r}: {_describe(error)}") from error
    _refuse_interpolations(
        parsed,
        f"command line {item!r}",
        "an override is stored in config.yaml and sent to the trackers as written; let the shell "
        "expand a variable ($VAR), or interpolate in a config file",
    )
    return parsed


def load_config(
    schema: type[Config],
    path: str | Path | None,
    overrides: Sequence[str] = (),
    base: Mapping | None = None,
    interpolations: bool = True,
    base_source: str | None = None,
) -> Config:
    """The typed config: dataclass defaults <- base (if any) <- YAML file (if any) <- `key=value` overrides.

    base: a saved config dict, e.g. the one a checkpoint holds (evaluating a run with its own config);
    saved values are resolved ones, so an interpolation in it is refused. base_source: where base came from
    (a checkpoint), named by errors in its values; without it they are the command line's, as without base.
    interpolations: whether the file's interpolations are resolved (False: refused, naming the key).
    """
    merged = _defaults(schema)
    if base is not None:
        saved = base_source or "saved config"
        _refuse_interpolations(dict(base), saved, "a saved config holds resolved values")
        try:
            merged = _merge(merged, base)
        except OmegaConfBaseException as error:
            raise ConfigError(f"{saved}: {_describe(error)}") from error
    required: set[str] = set()  # '???' values of the file, which an override must set
    if path is not None:
        kind = getattr(schema, "config_kind", None)
        path = find_config(kind, path) if kind else Path(path)
        try:
            loaded = _load_yaml(Path(path))
            if not interpolations:
                _refuse_interpolations(
                    loaded, str(path), "its values are taken as written (and its overrides reach every run)"
                )
            required = OmegaConf.missing_keys(loaded)
            merged = _merge(merged, loaded)
        except OmegaConfBaseException as error:
            raise ConfigError(f"{path}: {_describe(error)}") from error
    malformed = [item for item in overrides if "=" not in item or item.startswith("=")]
    if malformed:
        raise ConfigError(f"overrides must be key=value (dotted keys, e.g. optim.blr=2e-4), got {malformed}")
    empty = [item for item in overrides if item.endswith("=")]
    if empty:  # OmegaConf would read `key=` as null: a default silently changed
        raise ConfigError(
            f"command line {empty[0]!r}: no value after '='; give one, or write {empty[0]}null to unset it"
        )
    parsed = [_parse_override(item) for item in overrides]
    try:  # all at once: every merge copies the whole config (a study resolves hundreds)
        merged = _merge(merged, *parsed)
    except (OmegaConfBaseException, TypeError):
        for item, value in zip(overrides, parsed):  # one at a time, so that the error names the override
            try:
                merged = _merge(merged, value)
            except OmegaConfBaseException as error:
                raise ConfigError(f"command line {item!r}: {_describe(error)}") from error
            except TypeError as error:  # e.g. `list.0.key=...`: dotted keys cannot index into lists
                raise ConfigError(
                    f"command line {item!r}: {error} (a list is set whole: key=[a,b])"
                ) from error
    read = str(path) if path is not None else base_source or ""
    source = f"{read} + command line" if read and overrides else read or "command line"
    missing = sorted(required - {item.split("=", 1)[0] for item in overrides})
    if missing:
        raise ConfigError(
            f"{source}: required values not set ('???'): {', '.join(missing)}; "
            f"give them on the command line, e.g. {missing[0]}=..."
        )
    try:  # resolving the interpolations: a variable that is not set is named here
        resolved = OmegaConf.to_container(merged, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{source}: {_describe(error)}") from error
    _check_finite(resolved, source)
    try:
        return cast(Config, OmegaConf.to_object(merged))  # the schema's dataclass, built from `merged`
    except OmegaConfBaseException as error:
        raise ConfigError(f"{source}: {_describe(error)}") from error
    except ValueError as error:  # a dataclass's own check of its values (__post_init__)
        # The value it names (`key=value; ...`) came from the file or saved config unless an override set it.
        named = str(error).split("=", 1)[0]
        if read and named.replace(".", "").replace("_", "").isalnum():
            source = source if any(item.split("=", 1)[0] == named for item in overrides) else read
        raise ConfigError(f"{source}: {error}") from error


def load_modalities(path: str | Path) -> dict[str, Modality]:
    """The records a config file's `modalities:` section declares (its `extends` followed); {} if none."""
    section = _load_yaml(Path(path)).get("modalities") or {}
    try:
        declared = OmegaConf.to_container(section) if isinstance(section, DictConfig) else section
        return declare_all(cast(Mapping[str, Mapping], declared))  # checked there, naming each value
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path}: {error}") from error


def config_to_dict(config: object) -> dict[str, Any]:
    """A config dataclass as plain dicts, lists and scalars (what checkpoints store)."""
    return cast(dict[str, Any], OmegaConf.to_container(OmegaConf.structured(config)))


def config_to_yaml(config: object) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def _plain(value: object) -> object:
    """Tuples as lists: a config read back from YAML holds lists where the dataclass holds tuples."""
    return [_plain(item) for item in value] if isinstance(value, list | tuple) else value


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts, as 'key: old -> new'."""
    differences: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        name = f"{prefix}{key}"
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            differences += config_differences(before, after, f"{name}.")
        elif _plain(before) != _plain(after):
            differences.append(f"{name}: {before!r} -> {after!r}")
    return differences


def save_config(config: object, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically."""
    return atomic_write(path, lambda file: file.write(config_to_yaml(config).encode()))
