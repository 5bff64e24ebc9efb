"""Class names as text: label expansion for the text encoder and coarse action types for the prompt.

PeVL turns every class name into a sentence for the CLIP text encoder, so dataset codes become words:

- Diving48 ``Back+15som+05Twis+FREE`` -> ``"back takeoff, 1.5 somersaults, 0.5 twist, free position"``
  (take-off, somersaults, twists, flight position: one comma-separated phrase per sub-action).
- FineGym ``(VT) round-off, flic-flac on, ...`` -> coarse type ``"vault"`` and the text without the prefix.
- Toyota-Smarthome ``Cook.Cleandishes`` -> ``"cook: clean dishes"``.
- Kinetics / NTU / HAA500 names: underscores become spaces.

The coarse action type fills the Table-4 prompt ``"a video of {coarse} action {label}"``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

FINEGYM_EVENTS: dict[str, str] = {
    "VT": "vault",
    "FX": "floor exercise",
    "BB": "balance beam",
    "UB": "uneven bars",
    "PH": "pommel horse",
    "SR": "still rings",
    "PB": "parallel bars",
    "HB": "horizontal bar",
}
"""FineGym event prefixes (women's VT, FX, BB, UB and the men's apparatus) -> coarse action type."""

COARSE_TYPES: dict[str, str] = {
    "finegym": "gymnastic",
    "diving48": "diving",
    "toyota": "daily living",
    "kinetics400": "human",
    "haa500": "human",
    "synthetic": "diving",
}
"""Coarse action type of each dataset family (FineGym refines it per class from the event prefix)."""

_DIVING48_TAKEOFF = {"back", "forward", "inward", "reverse"}
_DIVING48_POSITION = {"FREE": "free", "PIKE": "pike", "TUCK": "tuck", "STR": "straight"}


def _half_units(digits: str) -> str:
    """Diving48 writes 1.5 as ``15`` and 0.5 as ``05``; whole numbers as one digit."""
    if len(digits) == 2 and digits[1] == "5":
        return f"{int(digits[0])}.5"
    return str(int(digits))


def _count_phrase(digits: str, noun: str) -> str:
    value = _half_units(digits)
    return f"{value} {noun}{'s' if float(value) > 1 else ''}"


def diving48_label_text(code: str) -> str:
    """Expand a Diving48 class code into words.

    Args:
        code: ``takeoff+somersaults+twists+position``, e.g. ``"Back+15som+05Twis+FREE"``.

    Returns:
        E.g. ``"back takeoff, 1.5 somersaults, 0.5 twist, free position"``. ``Dive`` (no somersault) becomes
        ``"dive"``, ``NoTwis`` ``"no twist"``; parts that are not recognised are kept, lower-cased.
    """
    phrases = []
    for part in code.strip().split("+"):
        part = part.strip()
        if not part:
            continue
        som = re.fullmatch(r"(\d+)som", part)
        twist = re.fullmatch(r"(\d+)Twis", part)
        if part.lower() in _DIVING48_TAKEOFF:
            phrases.append(f"{part.lower()} takeoff")
        elif som:
            phrases.append(_count_phrase(som.group(1), "somersault"))
        elif twist:
            phrases.append(_count_phrase(twist.group(1), "twist"))
        elif part == "NoTwis":
            phrases.append("no twist")
        elif part == "Dive":
            phrases.append("dive")
        elif part.upper() in _DIVING48_POSITION:
            phrases.append(f"{_DIVING48_POSITION[part.upper()]} position")
        else:
            phrases.append(part.lower())
    return ", ".join(phrases)


def parse_finegym_name(name: str) -> tuple[str | None, str]:
    """Split a FineGym element name into its coarse event type and the element text.

    Args:
        name: E.g. ``"(VT) round-off, flic-flac on, stretched salto backward with 2 turn off"``.

    Returns:
        ``(coarse, text)``: ``("vault", "round-off, flic-flac on, ...")``; ``coarse`` is ``None`` without a
        prefix. Unknown prefixes are lower-cased.
    """
    match = re.match(r"\s*\(([A-Za-z]+)\)\s*(.*)$", name)
    if not match:
        return None, " ".join(name.split())
    event = match.group(1).upper()
    return FINEGYM_EVENTS.get(event, event.lower()), " ".join(match.group(2).split())


# Words of the Toyota-Smarthome activity names, which are written run together ("Cleandishes").
_TOYOTA_WORDS = frozenset(
    """
    at bag boil book bottle bread can clean coffee cook cup cut dishes down drink eat enter from get glass grains
    insert kettle laptop lay leave make pills pour read sit snack stir stove table tablet take tea telephone up use
    walk watch water
    """.split()
)


@lru_cache(maxsize=1024)
def _segment(chunk: str) -> tuple[str, ...]:
    """Split a run-together lower-case word into the fewest known words; unknown text stays whole."""
    n = len(chunk)
    best: list[tuple[str, ...] | None] = [None] * (n + 1)
    best[0] = ()
    for end in range(1, n + 1):
        for start in range(end):
            prefix = best[start]
            word = chunk[start:end]
            if prefix is not None and word in _TOYOTA_WORDS:
                if best[end] is None or len(prefix) + 1 < len(best[end]):  # type: ignore[arg-type]
                    best[end] = prefix + (word,)
    return best[n] if best[n] is not None else (chunk,)  # type: ignore[return-value]


def _words(part: str) -> str:
    words = []
    for token in re.findall(r"[A-Z]{2,}(?![a-z])|[A-Z]?[a-z]+|\d+", part):
        words.extend([token] if token.isupper() and len(token) > 1 else _segment(token.lower()))
    return " ".join(words) if words else part.lower()


def toyota_label_text(name: str) -> str:
    """Turn a Toyota-Smarthome activity name into words.

    Args:
        name: E.g. ``"Cook.Cleandishes"``, ``"WatchTV"``, ``"Maketea.Insertteabag"``.

    Returns:
        ``"cook: clean dishes"``, ``"watch TV"``, ``"make tea: insert tea bag"``.
    """
    return ": ".join(_words(part) for part in name.strip().split(".") if part)


def clean_class_name(name: str) -> str:
    """Kinetics / NTU / HAA500 style names: underscores become spaces, runs of spaces collapse.

    Args:
        name: E.g. ``"air_drumming"`` or ``"  drink water "``.

    Returns:
        E.g. ``"air drumming"``.
    """
    return " ".join(name.replace("_", " ").split())


def class_text_key(name: str) -> str:
    """What a class name is as a text prompt: case, underscores and runs of spaces do not tell two names apart."""
    return " ".join(name.replace("_", " ").lower().split())


def first_duplicate(names: Sequence[str]) -> tuple[int, int] | None:
    """Positions (0-based) of the first class name that repeats an earlier one as text, or ``None``.

    Two identical texts get identical text features, so they split one action's probability between them and no
    model can tell the two classes apart (:func:`class_text_key` says which names are identical).
    """
    seen: dict[str, int] = {}
    for position, name in enumerate(names):
        key = class_text_key(name)
        if key in seen:
            return seen[key], position
        seen[key] = position
    return None


# ---- label maps written as Python source ----------------------------------------------------------------------------

_ASSIGNMENT = re.compile(r"^\s*[A-Za-z_]\w*\s*=")


def _name_id_pairs(value: object) -> list[tuple[int, str]] | None:
    """``{name: id}`` or ``{id: name}`` as ``(id, name)`` pairs sorted by id; ``None`` for anything else."""
    if not isinstance(value, dict) or not value:
        return None
    items = list(value.items())
    if all(isinstance(k, str) and type(v) is int for k, v in items):
        pairs = [(v, k) for k, v in items]
    elif all(type(k) is int and isinstance(v, str) for k, v in items):
        pairs = list(items)
    else:
        return None
    if len({i for i, _ in pairs}) != len(pairs):
        return None
    return sorted(pairs)


def python_label_map(source: str, text: str) -> list[tuple[int, str]] | None:
    """Read a label map written as a Python dict literal, or say why a Python-like file is not a label map.

    Read: one dict of class names to ids (``{'Cook.Cleandishes': 0, 'Cook.Cleanup': 1, ...}``) or of ids to names,
    bare or assigned to one name (``action_classes = {...}``). The text is parsed, never run (``ast``).

    Args:
        source: The file, named in errors.
        text: Its text.

    Returns:
        ``(id, name)`` pairs sorted by id, or ``None`` when the text is no Python-like source (a name per line,
        JSON, ...: the other readers' business).

    Raises:
        PevlError: Python-like source that is not one such dict, e.g. Toyota-Smarthome's
            ``official_2sAGCN_class_maps_and_subjects.txt`` (subject lists and two class maps).
    """
    import ast

    from pevl.errors import PevlError

    stripped = text.lstrip()
    has_assignment = any(_ASSIGNMENT.match(line) for line in text.splitlines())
    if not has_assignment and not (stripped.startswith("{") and "'" in stripped):
        return None
    if not has_assignment:
        try:
            import json

            json.loads(text)
            return None  # valid JSON: the JSON reader's
        except ValueError:
            pass
    what = "Python-like source (assignments such as 'name = [...]')" if has_assignment else "a Python dict literal"
    try:
        tree = ast.parse(text)
    except SyntaxError as err:
        raise PevlError(f"{source}: holds {what} that does not parse (line {err.lineno}), not a label map") from None
    values: dict[str, object] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.Assign) and len(targets) == 1 and isinstance(targets[0], ast.Name):
            key, expression = targets[0].id, node.value
        elif isinstance(node, ast.Expr):
            key, expression = f"expression on line {node.lineno}", node.value
        else:
            raise PevlError(f"{source}: holds Python statements (line {node.lineno}), not a label map")
        try:
            values[key] = ast.literal_eval(expression)
        except ValueError:
            values[key] = None
    maps = {key: pairs for key, value in values.items() if (pairs := _name_id_pairs(value)) is not None}
    if len(values) == 1 and len(maps) == 1:
        return next(iter(maps.values()))
    names = ", ".join(list(values)[:6]) + (", ..." if len(values) > 6 else "")
    hint = (
        f"; its class maps ({', '.join(maps)}) can be written out one name per line, in id order"
        if maps
        else "; a label map has one class name per line"
    )
    raise PevlError(f"{source}: holds {len(values)} Python assignments ({names}), not a label map{hint}")
