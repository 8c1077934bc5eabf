"""One validation layer for settings: every config dataclass checks its fields here, before any file is read.

A field states its bounds in its metadata, next to its help text, so the flag, the `--config` JSON key and the
Python keyword argument are checked by the same rule:

    batch_size: int = field(default=32, metadata={"help": "...", "min": 1})
    lr: float = field(default=5e-5, metadata={"help": "...", "gt": 0})
    dtype: str = field(default="auto", metadata={"help": "...", "choices": ("auto", "fp32", "bf16")})

Keys: "min"/"max" (inclusive), "gt"/"lt" (exclusive), "choices" (allowed values; for a list field, allowed items).
A field annotated `X | None` allows None (a setting decided later, e.g. from the model) and checks any other value as X.
Types are checked against the annotation (a JSON "32" for an int field is refused; an int is a valid float; a NaN
passes no bound). `validate(cfg)` raises SettingsError: one line with the flag, the bound and the value.
Each config calls it in `__post_init__`, so `Config(batch_size=0)` fails as early as `--batch-size 0`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import types
import typing
from pathlib import Path

from .errors import MinibertsError


class SettingsError(MinibertsError):
    """A setting is out of its bounds or of the wrong type."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def annotation_kind(annotation) -> tuple[type, type | None]:
    """(outer type, item type for lists) from a field annotation, which may be a string (`from __future__`)."""
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "str": str, "bool": bool, "list[str]": list[str],
                      "list[int]": list[int], "list[float]": list[float]}.get(annotation.replace(" ", ""), object)
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (object,)
        return list, item
    return annotation, None


def _type_ok(value, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    return True


def _type_name(kind: type) -> str:
    return {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}.get(kind, str(kind))


def _bound_problem(value, meta: dict) -> str | None:
    """What `value` violates, or None."""
    if isinstance(value, float) and math.isnan(value):
        return "must be a number, not NaN"
    if "min" in meta and not value >= meta["min"]:
        return f"must be at least {meta['min']}"
    if "gt" in meta and not value > meta["gt"]:
        return f"must be greater than {meta['gt']}"
    if "max" in meta and not value <= meta["max"]:
        return f"must be at most {meta['max']}"
    if "lt" in meta and not value < meta["lt"]:
        return f"must be less than {meta['lt']}"
    return None


@functools.cache  # per annotation, not per call: part of every Model.embed call's validation
def _optional(annotation) -> tuple[object, bool]:
    """`X | None` -> (X, True); anything else -> (annotation, False)."""
    if isinstance(annotation, str) and annotation.replace(" ", "").endswith("|None"):
        return annotation.replace(" ", "").removesuffix("|None"), True
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def check_value(name: str, value, annotation, meta: dict) -> None:
    """One setting against its annotation and metadata bounds; SettingsError names the flag, bound and value."""
    annotation, optional = _optional(annotation)
    if optional and value is None:
        return
    kind, item = annotation_kind(annotation)
    if kind is list:
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"{flag(name)} must be a list, got {value!r}")
        for v in value:
            check_value(name, v, item, meta)
        return
    if not _type_ok(value, kind):
        raise SettingsError(f"{flag(name)} must be {_type_name(kind)}, got {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        allowed = ", ".join("''" if c == "" else str(c) for c in meta["choices"])
        raise SettingsError(f"{flag(name)} must be one of {allowed}, got {value!r}")
    if kind in (int, float):
        problem = _bound_problem(value, meta)
        if problem:
            raise SettingsError(f"{flag(name)} {problem}, got {value!r}")


def read_settings_file(path: str | Path, cls) -> dict:
    """The settings in a `--config` JSON file for the dataclass `cls`, each key known and each value checked
    (type and bounds, as the flag would be); errors are one line naming the file, and the key where there is one."""
    path = Path(path)
    if path.is_dir():
        raise SettingsError(f"{path}: is a directory, expected a file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"{path}: cannot be read ({e.__class__.__name__}: {e})") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        raise SettingsError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(values, dict):
        kind = {list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(type(values), "a number")
        raise SettingsError(f"{path}: expected a JSON object of settings, found {kind}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = type_hints(cls)
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            raise SettingsError(f"{path}: unknown setting {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        try:
            check_value(key, value, hints.get(key, fields[key].type), fields[key].metadata)
        except SettingsError as e:
            raise SettingsError(f"{path}: {key!r}: {e}") from None
    return values


@functools.cache
def type_hints(cls) -> dict:
    """The evaluated annotations of a dataclass, once per class: evaluating them is most of a small config's
    validation (a per-call cost of `Model.embed`)."""
    return typing.get_type_hints(cls)


def validate(cfg) -> None:
    """Check every field of the dataclass instance `cfg` (types and the bounds in its metadata)."""
    hints = type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        check_value(f.name, getattr(cfg, f.name), hints.get(f.name, f.type), f.metadata)
