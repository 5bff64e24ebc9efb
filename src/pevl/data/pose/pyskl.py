"""PYSKL / MMAction2 skeleton pickles: read through a restricted unpickler, written so PYSKL can load them.

The format (PYSKL ``tools/data/README.md``): a dict ``{"split": {name: [frame_dir, ...]}, "annotations": [...]}``
where each annotation is a dict with ``frame_dir`` (str), ``total_frames`` (int), ``img_shape`` and
``original_shape`` (``(h, w)``), ``label`` (int, absent when unlabelled), ``keypoint`` ``[M, T, J, 2]`` float32
in pixels of ``img_shape`` and ``keypoint_score`` ``[M, T, J]`` float32. Older MMAction2 files are a bare list of
annotations, and single-video files (e.g. PaddleVideo's example) are one bare annotation dict;
:func:`load_pyskl` accepts all three.

A pickle can run arbitrary code when loaded, so :class:`RestrictedUnpickler` only rebuilds numpy arrays,
numpy dtypes and scalars and Python's builtin containers; any other global (``os.system``, ``eval``, a class of
some package) is refused before it is looked up, and nothing from the file is ever called except the numpy
array constructors.

:func:`save_pyskl` writes files that numpy 1.x and 2.x both load: numpy 2 pickles arrays through
``numpy._core.multiarray``, a module numpy < 1.26 (which PYSKL's environments pin) does not have, so every
array is written as a call of ``numpy.ndarray(shape, dtype, bytearray)``, names both versions share, and
numpy scalars as Python numbers. The arrays load writable (PYSKL's ``PreNormalize2D`` edits them in place).
"""

from __future__ import annotations

import collections
import io
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pevl.data.pose.base import far_outside
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
    if keypoint.shape[1] == 0:
        raise bad("has 0 frames (an empty 'keypoint' array): re-extract its poses or drop it from the file")
    keypoint = np.ascontiguousarray(keypoint, dtype=np.float32)
    score = np.array(score, dtype=np.float32)
    invalid = ~np.isfinite(keypoint).all(axis=-1) | ~np.isfinite(score)
    if invalid.any():
        keypoint[invalid] = 0.0
        score[invalid] = 0.0
    img_shape = _as_shape(ann.get("img_shape"))
    if img_shape is None:
        raise bad(f"'img_shape' is {ann.get('img_shape')!r}, expected (height, width)")
    outside = far_outside(keypoint, img_shape)
    if outside is not None:
        raise bad(
            f"frame {outside[0]} has a coordinate {outside[1]:g}, far outside its {img_shape[1]}x{img_shape[0]} "
            "frame (img_shape): not pixel coordinates of this video"
        )
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
    _refuse_conflicting_duplicates(annotations, path)
    return {"split": split, "annotations": annotations}


def _refuse_conflicting_duplicates(annotations: list[dict], path: Path) -> None:
    """Refuse two annotations of one ``frame_dir`` with different labels: which one is right cannot be told."""
    first: dict[str, int] = {}
    for position, ann in enumerate(annotations):
        name = ann["frame_dir"]
        if name not in first:
            first[name] = position
            continue
        other = annotations[first[name]]
        if other["label"] != ann["label"]:
            raise file_error(
                path,
                f"annotations #{first[name]} and #{position} are both {name!r} but labelled {other['label']} and "
                f"{ann['label']}: keep the right one",
            )


class _PortablePickler(pickle.Pickler):
    """Writes numpy arrays as ``numpy.ndarray(shape, dtype string, bytearray)``: loadable by numpy 1.x and 2.x."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray:
            if obj.dtype.hasobject or obj.dtype.fields is not None:
                raise pickle.PicklingError(f"cannot write an array of dtype {obj.dtype} portably")
            data = np.ascontiguousarray(obj)
            return np.ndarray, (data.shape, data.dtype.str, bytearray(data.tobytes()))
        return NotImplemented


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars turned into Python numbers (at any depth of dicts, lists and tuples)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def dump_portable(obj: Any, file: BinaryIO) -> None:
    """Pickle ``obj`` so that Python >= 3.4 with numpy 1.x or 2.x can load it (protocol 4, see module notes)."""
    _PortablePickler(file, protocol=4).dump(_plain(obj))


def save_pyskl(
    path: str | Path,
    annotations: list[dict],
    split: dict[str, list[str]] | None = None,
    placeholder_label: int | None = None,
) -> None:
    """Write annotations as a PYSKL skeleton pickle, atomically, loadable under numpy 1.x and 2.x.

    Annotations without a label (no ``label`` key, or a negative one) are written without a ``label`` key, as
    PYSKL's own extraction tool does, unless ``placeholder_label`` is given: they then get that label.
    MMAction2 loads either; PYSKL's standard pipelines end in ``Collect(keys=['keypoint', 'label'])``, which
    needs the key (``-1`` is the usual placeholder; pevl reads a negative label back as unlabelled).

    Args:
        path: Destination ``.pkl``.
        annotations: Annotation dicts (validated as by :func:`load_pyskl` before anything is written).
        split: Split name -> list of ``frame_dir``; when ``None``, one split ``"all"`` holds every annotation.
        placeholder_label: The label written for unlabelled annotations (``None``: no ``label`` key).

    Raises:
        PevlError: For an invalid annotation or a split naming an unknown ``frame_dir``; nothing is written then.
    """
    checked = []
    for i, ann in enumerate(annotations):
        out = validate_annotation(ann, path, i)
        if out["label"] < 0:
            if placeholder_label is None:
                del out["label"]
            else:
                out["label"] = int(placeholder_label)
        checked.append(out)
    names = [ann["frame_dir"] for ann in checked]
    if split is None:
        split = {"all": names}
    known = set(names)
    for name, dirs in split.items():
        unknown = [d for d in dirs if d not in known]
        if unknown:
            raise file_error(path, f"split {name!r} names {unknown[0]!r}, which has no annotation")
    payload = {"split": {str(k): [str(d) for d in v] for k, v in split.items()}, "annotations": checked}
    with atomic_open(path, "wb") as f:
        dump_portable(payload, f)


def main_person(keypoint: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The main actor of ``[M, T, J, 2]`` / ``[M, T, J]`` poses (:func:`pevl.data.pose.tracking.main_person`)."""
    from pevl.data.pose.tracking import main_person as choose

    return choose(keypoint, score)


@dataclass
class PersonPoses:
    """The main person of one annotation, in COCO-17 pixels of ``img_shape``."""

    keypoint: np.ndarray  # [T, 17, 2]
    score: np.ndarray  # [T, 17]
    img_shape: tuple[int, int]
    warnings: list[str] = field(default_factory=list)  # e.g. resampled to the video's frame count


POSE_FRAME_TOLERANCE = 0.05
"""A pose annotation may have this share of frames more or fewer than its video (at least 2 frames) and still be
resampled by time to it, with a warning; beyond it, it is refused unless resampling is asked for."""


def pose_frames_fit(pose_frames: int, video_frames: int) -> bool:
    """Whether ``pose_frames`` pose frames may be resampled by time to a ``video_frames`` video unasked.

    True within :data:`POSE_FRAME_TOLERANCE` of the video's count (and always within 2 frames).
    """
    return abs(pose_frames - video_frames) <= max(2, POSE_FRAME_TOLERANCE * video_frames)


def resample_by_time(array: np.ndarray, num_frames: int) -> np.ndarray:
    """``array`` (frames first) resampled to ``num_frames`` frames: each takes the frame at the same relative time."""
    source = array.shape[0]
    rows = np.minimum(((np.arange(num_frames) + 0.5) * source / num_frames).astype(np.int64), source - 1)
    return array[rows]


def video_keys(video: str | Path) -> tuple[str, ...]:
    """The ``frame_dir`` values that may name a video: its path without extension, its stem, its file name."""
    video = Path(video)
    return tuple(dict.fromkeys((video.with_suffix("").as_posix(), video.stem, video.name)))


class SkeletonFile:
    """A loaded skeleton pickle with lookup by ``frame_dir``: the one way to get a video's poses from a pickle.

    A ``frame_dir`` is found as written, or by its last path component when that is unambiguous in the file.

    Args:
        path: The pickle.
        layout: Joint layout of the file when it is not COCO-17 (see :mod:`pevl.data.pose.layouts`).
    """

    def __init__(self, path: str | Path, layout: str | None = None) -> None:
        self.path = Path(path)
        self.layout = layout
        data = load_pyskl(self.path)
        self.split: dict[str, list[str]] = data["split"]
        self.annotations: list[dict] = data["annotations"]
        self._by_key: dict[str, dict] = {}
        names: dict[str, list[dict]] = {}
        for ann in self.annotations:
            self._by_key.setdefault(ann["frame_dir"], ann)
            names.setdefault(Path(ann["frame_dir"]).name, []).append(ann)
        for name, anns in names.items():  # a last component is only a key when it is unambiguous
            if len(anns) == 1:
                self._by_key.setdefault(name, anns[0])

    def _check_fits(self, ann: dict, video: Path, num_frames: int | None, frame_shape: tuple[int, int] | None) -> None:
        """Refuse an annotation named after another video whose frame count or frame shape differs from ``video``."""
        frames = int(ann["keypoint"].shape[-3])
        shape = tuple(int(v) for v in ann["img_shape"])
        problems = []
        if num_frames is not None and abs(frames - num_frames) > 1:
            problems.append(f"{frames} frames, the video {num_frames}")
        if frame_shape is not None and shape[0] > 0 and frame_shape[0] > 0:
            ratio, video_ratio = shape[1] / shape[0], frame_shape[1] / frame_shape[0]
            if abs(ratio / video_ratio - 1) > 0.02:
                problems.append(f"{shape[1]}x{shape[0]} frames, the video {frame_shape[1]}x{frame_shape[0]}")
        if problems:
            raise file_error(
                self.path,
                f"its only annotation {ann['frame_dir']!r} is not for {video.name}: it has {'; '.join(problems)} "
                f"(name it {video.stem!r} if it is)",
            )

    def find(self, keys: Iterable[str]) -> dict | None:
        """The first annotation named by one of ``keys``, or ``None``."""
        for key in keys:
            ann = self._by_key.get(key)
            if ann is not None:
                return ann
        return None

    def person(self, ann: dict) -> PersonPoses:
        """The main person of an annotation, converted to COCO-17.

        Raises:
            PevlError: The annotation is not COCO-17 and no ``layout`` was given.
        """
        from pevl.data.pose.layouts import to_coco17

        keypoint, score = ann["keypoint"], ann["keypoint_score"]
        if self.layout is not None:
            keypoint, score = to_coco17(keypoint, score, self.layout)
        elif keypoint.shape[-2] != 17:
            raise file_error(
                self.path,
                f"poses have {keypoint.shape[-2]} joints, not COCO-17: give their layout (e.g. pose_layout 'jhmdb15')",
            )
        keypoint, score = main_person(keypoint, score)
        return PersonPoses(keypoint, score, tuple(ann["img_shape"]))  # type: ignore[arg-type]

    def video_poses(
        self,
        video: str | Path,
        num_frames: int | None = None,
        frame_shape: tuple[int, int] | None = None,
        resample: bool = False,
    ) -> PersonPoses:
        """The main person's poses of a video, by :func:`video_keys`, one row per frame of the video.

        A file of one annotation under another name serves the video only when it fits it: same frame count
        (``num_frames``, within a frame) and same aspect ratio (``frame_shape``, height and width), when given.
        An annotation named after the video whose frame count differs from ``num_frames`` is resampled by time to
        it with a warning (both counts) when within :data:`POSE_FRAME_TOLERANCE`, or when ``resample`` says so.

        Raises:
            PevlError: The file has no annotation for the video, its only one is for another video, or the frame
                counts differ beyond the tolerance without ``resample``.
        """
        video = Path(video)
        ann = self.find(video_keys(video))
        if ann is None and len(self.annotations) == 1:
            ann = self.annotations[0]
            self._check_fits(ann, video, num_frames, frame_shape)
        if ann is None:
            raise file_error(self.path, f"no annotation for {video.name} (frame_dir {video.stem!r})")
        person = self.person(ann)
        frames = person.keypoint.shape[0]
        if num_frames is None or num_frames < 1 or frames == num_frames:
            return person
        counts = f"annotation {ann['frame_dir']!r} has {frames} pose frames, the video {video.name} {num_frames}"
        if not pose_frames_fit(frames, num_frames) and not resample:
            raise file_error(
                self.path,
                f"{counts}: another video or another frame rate? Give --resample-poses to resample them by time",
            )
        person.keypoint = resample_by_time(person.keypoint, num_frames)
        person.score = resample_by_time(person.score, num_frames)
        person.warnings.append(f"{self.path}: {counts}; poses resampled by time to the video's frames")
        return person
