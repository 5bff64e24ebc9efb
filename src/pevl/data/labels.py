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
