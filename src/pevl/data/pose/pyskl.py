"""PYSKL / MMAction2 skeleton pickles, read through a restricted unpickler.

The format (PYSKL ``tools/data/README.md``): a dict ``{"split": {name: [frame_dir, ...]}, "annotations": [...]}``
where each annotation is a dict with ``frame_dir`` (str), ``total_frames`` (int), ``img_shape`` and
``original_shape`` (``(h, w)``), ``label`` (int), ``keypoint`` ``[M, T, J, 2]`` in pixels of ``img_shape`` and
``keypoint_score`` ``[M, T, J]``. Older MMAction2 files are a bare list of annotations, and single-video files
(e.g. PaddleVideo's example) are one bare annotation dict; :func:`load_pyskl` accepts all three.

A pickle can run arbitrary code when loaded, so :class:`RestrictedUnpickler` only rebuilds numpy arrays,
numpy dtypes and scalars and Python's builtin containers; any other global (``os.system``, ``eval``, a class of
some package) is refused before it is looked up, and nothing from the file is ever called except the numpy
array constructors.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from pevl.errors import PevlError, file_error
from pevl.utils.io import atomic_open


def _numpy_core() -> Any:
    try:
        from numpy import _core as core  # numpy >= 2 (also the name numpy 2 writes into pickles)
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy import core
    return core


def _allowed_globals() -> dict[tuple[str, str], Any]:
    core = _numpy_core()
    multiarray, numeric = core.multiarray, core.numeric
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): __import__("_codecs").encode,  # bytes written by protocol 2 (pure function)
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    # numpy 1.x writes "numpy.core.*", numpy 2 writes "numpy._core.*": both name the same functions.
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    for module in ("builtins", "__builtin__"):  # Python 2 pickles say __builtin__
        for name, obj in (("set", set), ("frozenset", frozenset), ("complex", complex), ("bytearray", bytearray)):
            allowed[(module, name)] = obj
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays, dtypes, scalars and builtin containers.

    Any other global raises :class:`pickle.UnpicklingError` naming it, before it is imported.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed global; refuse everything else."""
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        """Persistent references point outside the file: refuse them."""
        raise pickle.UnpicklingError("refused persistent reference")


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (Python 2 strings decoded as latin-1)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def _as_shape(value: Any) -> tuple[int, int] | None:
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (h, w) if h > 0 and w > 0 else None


def validate_annotation(ann: Any, path: str | Path, position: int) -> dict:
    """Check one annotation and return a normalised copy.

    Normalisation: ``keypoint`` becomes float32 ``[M, T, J, 2]`` and ``keypoint_score`` float32 ``[M, T, J]``
    (a ``[M, T, J, 3]`` keypoint array with no separate score carries the score as its third channel); NaN
    coordinates get score 0 and coordinates 0; ``img_shape``/``original_shape`` become ``(h, w)`` int tuples
    (``original_shape`` defaults to ``img_shape``); ``total_frames`` defaults to ``T``; ``label`` defaults to -1
    (unlabelled). Other keys are kept as they are.

    Args:
        ann: The annotation as unpickled.
        path: The file it came from (for messages).
        position: Its index in the file (names it when ``frame_dir`` is missing).

    Returns:
        The normalised annotation.

    Raises:
        PevlError: Naming the file, the annotation's ``frame_dir`` and the problem.
    """
    if not isinstance(ann, dict):
        raise file_error(path, f"annotation #{position} is a {type(ann).__name__}, not a dict")
    frame_dir = ann.get("frame_dir")
    if not isinstance(frame_dir, str) or not frame_dir:
        raise file_error(path, f"annotation #{position} has no 'frame_dir' string")

    def bad(problem: str) -> PevlError:
        return file_error(path, f"annotation {frame_dir!r}: {problem}")

    if "keypoint" not in ann:
        raise bad("no 'keypoint' array (annotations whose keypoints live in separate 'raw_file's are not supported)")
    keypoint = ann["keypoint"]
    if not isinstance(keypoint, np.ndarray) or keypoint.dtype.kind not in "fiu":
        raise bad("'keypoint' is not a numeric numpy array")
    if keypoint.ndim != 4 or keypoint.shape[-1] not in (2, 3):
        raise bad(f"'keypoint' has shape {tuple(keypoint.shape)}, expected [M, T, J, 2] or [M, T, J, 3]")
    keypoint = keypoint.astype(np.float32)
    score = ann.get("keypoint_score")
    if score is None:
        if keypoint.shape[-1] != 3:
            raise bad("no 'keypoint_score' and 'keypoint' has no score channel")
        score = keypoint[..., 2]
        finite = score[np.isfinite(score)]
        if finite.size and (finite.min() < 0.0 or finite.max() > 1.0 + 1e-3):
            raise bad("the third keypoint channel is not a score in [0, 1] (3D skeletons are not supported)")
        keypoint = keypoint[..., :2]
    else:
        if not isinstance(score, np.ndarray) or score.dtype.kind not in "fiu":
            raise bad("'keypoint_score' is not a numeric numpy array")
        if keypoint.shape[-1] == 3:
            raise bad("'keypoint' has 3 channels and a separate 'keypoint_score' (3D skeletons are not supported)")
        if score.shape != keypoint.shape[:3]:
            raise bad(f"'keypoint_score' has shape {tuple(score.shape)}, expected {tuple(keypoint.shape[:3])}")
    keypoint = np.ascontiguousarray(keypoint, dtype=np.float32)
    score = np.array(score, dtype=np.float32)
    invalid = ~np.isfinite(keypoint).all(axis=-1) | ~np.isfinite(score)
    if invalid.any():
        keypoint[invalid] = 0.0
        score[invalid] = 0.0
    img_shape = _as_shape(ann.get("img_shape"))
    if img_shape is None:
        raise bad(f"'img_shape' is {ann.get('img_shape')!r}, expected (height, width)")
    original_shape = _as_shape(ann.get("original_shape", img_shape))
    if original_shape is None:
        raise bad(f"'original_shape' is {ann.get('original_shape')!r}, expected (height, width)")
    total_frames = ann.get("total_frames", keypoint.shape[1])
    label = ann.get("label", -1)
    try:
        total_frames, label = int(total_frames), int(label)
    except (TypeError, ValueError):
        raise bad("'total_frames' and 'label' must be integers") from None
    out = dict(ann)
    out.update(
        keypoint=keypoint,
        keypoint_score=score,
        img_shape=img_shape,
        original_shape=original_shape,
        total_frames=total_frames,
        label=label,
    )
    return out


def _normalise(data: Any, path: Path) -> tuple[dict[str, list[str]], list[Any]]:
    if isinstance(data, dict) and "annotations" in data:
        annotations, split = data["annotations"], data.get("split") or {}
    elif isinstance(data, list):
        annotations, split = data, {}
    elif isinstance(data, dict) and ("keypoint" in data or "frame_dir" in data):
        annotations, split = [data], {}
    else:
        raise file_error(
            path, "not a PYSKL skeleton file (expected a dict with 'annotations', a list of annotations or one)"
        )
    if not isinstance(annotations, list):
        raise file_error(path, "'annotations' is not a list")
    if not isinstance(split, dict) or not all(
        isinstance(k, str) and isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)
        for k, v in split.items()
    ):
        raise file_error(path, "'split' is not a dict of lists of frame_dir strings")
    return {k: list(v) for k, v in split.items()}, annotations


def load_pyskl(path: str | Path) -> dict:
    """Load a PYSKL / MMAction2 skeleton pickle safely.

    Args:
        path: The ``.pkl`` file: the PYSKL dict, a bare list of annotations, or one annotation dict.

    Returns:
        ``{"split": dict[str, list[str]], "annotations": list[dict]}`` with every annotation validated and
        normalised by :func:`validate_annotation` (``split`` is ``{}`` when the file has none).

    Raises:
        PevlError: For a missing or unreadable file, a global the restricted unpickler refuses (named in the
            message), or an annotation with missing keys or wrong shapes (named by ``frame_dir``).
    """
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "no such file" if not path.exists() else "not a file")
    data_bytes = path.read_bytes()
    try:
        data = restricted_loads(data_bytes)
    except pickle.UnpicklingError as err:
        message = str(err).splitlines()[0] if str(err) else "unreadable data"
        if message.startswith("refused"):
            raise file_error(
                path, f"{message}: skeleton pickles may only hold numpy arrays and Python containers"
            ) from None
        raise file_error(path, f"not a valid pickle ({message})") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as err:
        detail = str(err).splitlines()[0] if str(err) else ""
        raise file_error(path, f"not a valid pickle ({type(err).__name__}{': ' + detail if detail else ''})") from None
    split, annotations = _normalise(data, path)
    annotations = [validate_annotation(ann, path, i) for i, ann in enumerate(annotations)]
    return {"split": split, "annotations": annotations}


def save_pyskl(path: str | Path, annotations: list[dict], split: dict[str, list[str]] | None = None) -> None:
    """Write annotations as a PYSKL skeleton pickle, atomically.

    Args:
        path: Destination ``.pkl``.
        annotations: Annotation dicts (validated as by :func:`load_pyskl` before anything is written).
        split: Split name -> list of ``frame_dir``; ``{}`` when ``None``.

    Raises:
        PevlError: For an invalid annotation; nothing is written then.
    """
    checked = [validate_annotation(ann, path, i) for i, ann in enumerate(annotations)]
    payload = {"split": {k: list(v) for k, v in (split or {}).items()}, "annotations": checked}
    with atomic_open(path, "wb") as f:
        pickle.dump(payload, f, protocol=4)


def main_person(keypoint: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the main person of a multi-person skeleton: the one with the highest mean score over the clip.

    Args:
        keypoint: ``[M, T, J, 2]``.
        score: ``[M, T, J]``.

    Returns:
        ``(keypoint [T, J, 2], score [T, J])`` of that person (zeros with score 0 when ``M == 0``).
    """
    if keypoint.shape[0] == 0:
        return np.zeros(keypoint.shape[1:], np.float32), np.zeros(score.shape[1:], np.float32)
    best = int(np.argmax(score.reshape(score.shape[0], -1).mean(axis=1)))
    return keypoint[best], score[best]
