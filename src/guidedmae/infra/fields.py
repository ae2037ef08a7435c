"""A dataclass's values checked against its annotations, for records built from values no typed loader has
checked (a config's `modalities:` section, a model folder's config.json): YAML and JSON give any value, and
a float where a whole number belongs fails far from the file, deep inside a layer's constructor.

    check_field_types(record, "modalities.flow.")   # ValueError: modalities.flow.channels=2.5; expected ...
    check_seed(config.seed, "seed")                  # ValueError: seed=18446744073709551616; expected ...
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, TypeGuard, get_args, get_origin

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["SEED_LIMIT", "check_field_types", "check_seed"]

# Every seed a user gives: numpy's legacy generators and many libraries take 32-bit seeds, torch's take 64-bit
# ones; one range that every consumer takes, checked where the seed is given rather than where it overflows.
SEED_LIMIT = 2**32


def _is_whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# YAML and JSON write the float 255.0 as 255: a whole number is taken too
def _is_finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# annotation -> (whether a value fits, what one is called, what several are called)
SCALARS: dict[type, tuple[Callable[[object], bool], str, str]] = {
    int: (_is_whole, "a whole number", "whole numbers"),
    float: (_is_finite, "a finite number", "finite numbers"),
    bool: (lambda value: isinstance(value, bool), "true or false", "true or false values"),
    str: (lambda value: isinstance(value, str), "a string", "strings"),
}


def _expected(annotation: object, value: object) -> str | None:
    """What `annotation` expects, if `value` does not fit it; None if it does or the annotation is not
    one of int, float, bool, str, tuple[<one of those>, ...] (a list or tuple) and dict (a mapping)."""
    if annotation in SCALARS:
        fits, one, _ = SCALARS[annotation]
        return None if fits(value) else one
    origin, arguments = get_origin(annotation), get_args(annotation)
    if origin is tuple and arguments[1:] == (Ellipsis,) and arguments[0] in SCALARS:
        fits, _, several = SCALARS[arguments[0]]
        return None if isinstance(value, list | tuple) and all(map(fits, value)) else f"a list of {several}"
    if origin is dict:
        return None if isinstance(value, Mapping) else "a mapping of keys"
    return None


def check_field_types(record: "DataclassInstance", prefix: str) -> None:
    """Raise ValueError "<prefix><field>=<value>; expected <what>" for the first field of the dataclass
    `record` whose value does not fit its annotation (see _expected; other annotations are not checked)."""
    for field in fields(record):
        value = getattr(record, field.name)
        expected = _expected(field.type, value)
        if expected is not None:
            raise ValueError(f"{prefix}{field.name}={value!r}; expected {expected}")


def check_seed(value: object, key: str) -> None:
    """Raise ValueError "<key>=<value>; expected a whole number 0 <= seed < 2^32" for a seed out of range."""
    if not _is_whole(value) or not 0 <= value < SEED_LIMIT:
        raise ValueError(f"{key}={value!r}; expected a whole number 0 <= seed < 2^32 ({SEED_LIMIT})")
