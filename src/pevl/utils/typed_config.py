"""Typed, strict dataclass configs: value coercion and unknown-key checks with "did you mean" hints."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Union

from pevl.errors import PevlError

DELETE_KEY = "_delete_"
"""In a config mapping, ``_delete_: true`` replaces the inherited mapping instead of merging into it."""


class ConfigKeyError(PevlError):
    """A :class:`PevlError` about one config key; ``key`` is its dotted name (used to find which file set it)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} numbers" if Ellipsis not in args else "a list"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}
    return names.get(origin or tp, getattr(tp, "__name__", str(tp)))


_BOOL_WORDS = {word: "true" for word in ("yes", "on", "y")} | {word: "false" for word in ("no", "off", "n")}
"""YAML 1.1 and shell habits for booleans: refused (YAML 1.2 reads them as strings), with the word meant."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def coerce_value(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` (``int``, ``float | None``, ``tuple[float, float]``, ...).

    Ints are accepted for floats, numeric strings for floats (``"1e-4"``), lists for tuples (a single string for a
    tuple of strings) and ``null`` for an empty mapping. Nothing else is converted: booleans are only ``true`` /
    ``false`` (not ``"no"`` or ``off``), integers are never floats (``2.0`` is refused), booleans never numbers.

    Raises:
        ConfigKeyError: Naming ``key``: ``config key 'optim.lr' must be a number, got 'fast'``.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    fail = ConfigKeyError(key, f"config key '{key}' must be {_describe(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce_value(value, option, key)
            except ConfigKeyError:
                pass
        raise fail
    if tp is bool and isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, str) and value.lower() in _BOOL_WORDS:
        meant = _BOOL_WORDS[value.lower()]
        raise ConfigKeyError(key, f"config key '{key}' must be true or false, got {value!r} (write {meant})")
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and (_is_number(value) or isinstance(value, str)):
        try:
            return float(value)
        except ValueError:
            raise fail from None
    if tp is str and (isinstance(value, str) or (_is_number(value) and isinstance(value, int))):
        return str(value)  # an int is accepted for names such as split `1`
    if origin is tuple and Ellipsis in args and args[0] is str and isinstance(value, str):
        return (value,)
    if origin is tuple and isinstance(value, (list, tuple)):
        if Ellipsis in args:
            return tuple(coerce_value(v, args[0], key) for v in value)
        if len(value) == len(args):
            return tuple(coerce_value(v, a, key) for v, a in zip(value, args, strict=True))
    if (tp is dict or origin is dict) and (value is None or isinstance(value, Mapping)):
        return plain(value or {})
    if tp in (bool, int, float, str, dict) or origin in (tuple, dict):
        raise fail
    return value


def plain(value: Any) -> Any:
    """A deep copy made of dicts, lists and scalars (tuples become lists)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def field_types(dataclass_type: type) -> dict[str, Any]:
    """The resolved type annotation of every field of a dataclass."""
    try:
        hints = typing.get_type_hints(dataclass_type)
    except (NameError, TypeError):
        hints = {}
    types_by_name = {}
    for f in dataclasses.fields(dataclass_type):
        tp = hints.get(f.name, f.type)
        if isinstance(tp, str):  # unresolvable annotation (a class defined in a function): infer from the default
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            tp = type(default) if dataclasses.is_dataclass(default) else Any
        types_by_name[f.name] = tp
    return types_by_name


def _nested_dataclass(tp: Any) -> type | None:
    """The dataclass inside an annotation such as ``VisionConfig`` or ``VisionConfig | None``."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        for option in typing.get_args(tp):
            if isinstance(option, type) and dataclasses.is_dataclass(option):
                return option
    return None


def suggest(key: str, valid: Sequence[str]) -> str:
    """The ``" (did you mean 'x'?)"`` hint for ``key`` among ``valid`` names, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_keys(mapping: Mapping[str, Any], dataclass_type: type, prefix: str = "") -> None:
    """Fail on the first key of ``mapping`` that is not a field of ``dataclass_type``, suggesting the closest one.

    Nested dataclass fields are checked recursively when their value is a mapping.

    Args:
        mapping: Keys to check (values are not validated here).
        dataclass_type: A dataclass whose field names are the valid keys.
        prefix: Dotted path shown before each key, e.g. ``"model.overrides."``.

    Raises:
        ConfigKeyError: ``unknown config key 'model.overrides.num_ucmr' (did you mean
            'model.overrides.num_ucmr_blocks'?)``.
    """
    types_by_name = field_types(dataclass_type)
    for key, value in mapping.items():
        if key not in types_by_name:
            full = f"{prefix}{key}"
            hint = suggest(full, [f"{prefix}{name}" for name in types_by_name])
            raise ConfigKeyError(full, f"unknown config key '{full}'{hint}")
        nested = _nested_dataclass(types_by_name[key])
        if nested is not None and isinstance(value, Mapping):
            check_keys({k: v for k, v in value.items() if k != DELETE_KEY}, nested, f"{prefix}{key}.")


def coerce_mapping(mapping: Mapping[str, Any], dataclass_type: type, prefix: str = "") -> dict[str, Any]:
    """Check the keys of ``mapping`` against ``dataclass_type`` and convert each value to its field's type.

    The same rules as the run sections (:func:`coerce_value`); a nested dataclass field takes a mapping (checked
    recursively) or any other value its own constructor accepts (e.g. an architecture name).

    Args:
        mapping: Field names to values, e.g. ``{"num_ucmr_blocks": 2, "p2v": False}``.
        dataclass_type: The dataclass whose fields the keys must be.
        prefix: Dotted path shown before each key, e.g. ``"model.overrides."``.

    Returns:
        A new mapping with converted values.

    Raises:
        ConfigKeyError: On the first unknown key (closest one suggested) or a value of the wrong type.
    """
    check_keys(mapping, dataclass_type, prefix)
    types_by_name = field_types(dataclass_type)
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if key == DELETE_KEY:
            continue
        tp = types_by_name[key]
        nested = _nested_dataclass(tp)
        if nested is not None:
            out[key] = coerce_mapping(value, nested, f"{prefix}{key}.") if isinstance(value, Mapping) else value
        else:
            out[key] = coerce_value(value, tp, f"{prefix}{key}")
    return out
