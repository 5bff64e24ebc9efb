"""YAML for configs: the YAML 1.2 core schema on top of PyYAML's safe loader.

PyYAML follows YAML 1.1, where ``1e-4`` is a string and ``off`` / ``yes`` are booleans; configs are easier to write
with YAML 1.2 rules, so the loader here reads ``1e-4`` as a float and only ``true`` / ``false`` as booleans, and the
dumper quotes every string that either reading could change.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


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
