"""YAML config files: the YAML 1.2 core schema on top of PyYAML's safe loader, ``_base_`` inheritance, merging.

PyYAML follows YAML 1.1, where ``1e-4`` is a string and ``off`` / ``yes`` are booleans; configs are easier to write
with YAML 1.2 rules, so the loader here reads ``1e-4`` as a float and only ``true`` / ``false`` as booleans, and the
dumper quotes every string that either reading could change.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from pevl.errors import PevlError, file_error
from pevl.utils.typed_config import DELETE_KEY, plain

BASE_KEY = "_base_"
"""In a config file, the file (or list of files) it inherits from, relative to itself."""


def _yaml_12_resolvers() -> dict[str, list[tuple[str, re.Pattern[str]]]]:
    """PyYAML's implicit resolvers with YAML 1.2 floats (``1e-4``) and booleans (only true/false)."""
    resolvers = {
        first: [
            (tag, regexp) for tag, regexp in entries if tag not in ("tag:yaml.org,2002:float", "tag:yaml.org,2002:bool")
        ]
        for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    float_re = re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    )
    bool_re = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
    for first in "-+0123456789.":
        resolvers.setdefault(first, []).append(("tag:yaml.org,2002:float", float_re))
    for first in "tTfF":
        resolvers.setdefault(first, []).append(("tag:yaml.org,2002:bool", bool_re))
    return resolvers


class _Loader(yaml.SafeLoader):
    """Safe loader that reads ``1e-4`` as a float and ``off``/``yes`` as strings (YAML 1.2 core schema)."""


class _Dumper(yaml.SafeDumper):
    """Safe dumper that quotes every string a YAML reader (1.1 or 1.2) could take for a number or boolean."""


def _union_resolvers() -> dict[str, list[tuple[str, re.Pattern[str]]]]:
    """YAML 1.1 and 1.2 resolvers together: the dumper quotes any string that either reading would change."""
    merged = {first: list(entries) for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    for first, entries in _yaml_12_resolvers().items():
        merged.setdefault(first, []).extend(entries)
    return merged


_Loader.yaml_implicit_resolvers = _yaml_12_resolvers()
_Dumper.yaml_implicit_resolvers = _union_resolvers()
_Dumper.add_representer(tuple, lambda dumper, data: dumper.represent_list(list(data)))


def parse_yaml(text: str) -> Any:
    """Parse YAML text with the config loader (YAML 1.2 numbers and booleans, no code execution)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader derives from SafeLoader


def dump_yaml(data: Any) -> str:
    """Dump plain data as block-style YAML that :func:`parse_yaml` reads back identically."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


# ---- config files: _base_ inheritance and merging -------------------------------------------------------------------


def leaf_paths(data: Any, prefix: str = "") -> list[str]:
    """The dotted keys of the leaves of a nested mapping (``_base_`` and ``_delete_`` left out)."""
    if isinstance(data, Mapping) and data:
        out: list[str] = []
        for key, value in data.items():
            if key not in (BASE_KEY, DELETE_KEY):
                out += leaf_paths(value, f"{prefix}{key}.")
        return out
    return [prefix[:-1]] if prefix else []


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base``: mappings merge recursively, everything else is replaced.

    A mapping in ``update`` holding ``_delete_: true`` replaces the base mapping instead of merging into it.
    """
    merged = plain(base)
    for key, value in update.items():
        if key in (BASE_KEY, DELETE_KEY):
            continue
        if isinstance(value, Mapping):
            replace = bool(value.get(DELETE_KEY, False))
            inner = {k: v for k, v in value.items() if k != DELETE_KEY}
            if not replace and isinstance(merged.get(key), Mapping):
                merged[key] = deep_merge(merged[key], inner)
            else:
                merged[key] = deep_merge({}, inner)
        else:
            merged[key] = plain(value)
    return merged


def read_config_file(path: Path) -> dict[str, Any]:
    """One YAML config file as a mapping (empty when the file is: with a one-line warning).

    Raises:
        PevlError: Naming the file: missing, unreadable, not YAML (with line and column) or not a mapping.
    """
    if not path.exists():
        raise file_error(path, "config file not found")
    if path.is_dir():
        raise file_error(path, "is a directory, not a config file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise file_error(path, f"cannot read config file ({err})") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise file_error(path, f"invalid YAML{where}: {problem}") from None
    if data is None or data == {}:
        print(f"warning: {path}: the config file is empty; every setting takes its default", file=sys.stderr)
        return {}
    if not isinstance(data, Mapping):
        raise file_error(path, f"a config file must hold a mapping of sections, not a {type(data).__name__}")
    return dict(data)


def load_tree(
    path: Path, check: Callable[[Mapping[str, Any]], None], stack: tuple[Path, ...] = ()
) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a config file and its ``_base_`` chain.

    Args:
        path: The file.
        check: Called on each file's own mapping; its exception's message is reported naming that file.
        stack: The files that inherit from this one (to report circular inheritance).

    Returns:
        The merged tree and, for each dotted leaf key, the file that set it.
    """
    path = path.resolve() if path.exists() else path
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise file_error(stack[-1], f"circular _base_ inheritance: {chain}")
    raw = read_config_file(path)
    try:
        check(raw)
    except PevlError as err:
        raise file_error(path, str(err)) from None
    bases = raw.get(BASE_KEY) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise file_error(path, f"{BASE_KEY} must be a file name or a list of file names, got {bases!r}")
    tree: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    for base in bases:
        base_path = Path(base).expanduser()
        base_path = base_path if base_path.is_absolute() else path.parent / base_path
        if not base_path.exists():
            raise file_error(path, f"{BASE_KEY} file not found: {base_path}")
        base_tree, base_prov = load_tree(base_path, check, (*stack, path))
        tree = deep_merge(tree, base_tree)
        provenance.update(base_prov)
    tree = deep_merge(tree, raw)
    provenance.update({leaf: str(path) for leaf in leaf_paths(raw)})
    return tree, provenance
