"""RTMPose (through rtmlib): multi-person COCO-17 pose extraction, an optional extra.

``pip install 'pevl[rtmpose]'`` installs ``rtmlib`` and ``onnxruntime``. rtmlib runs a YOLOX person detector
and an RTMPose top-down model (ONNX) per frame; it downloads the ONNX weights on first use (an explicit user
action: nothing here runs at import or in tests). Its COCO-17 output needs no remapping. Persons are linked
across frames by :mod:`pevl.data.pose.tracking`, which keeps the main actor(s).

Modes (rtmlib's presets): ``lightweight`` (YOLOX-tiny + RTMPose-s), ``balanced`` (YOLOX-m + RTMPose-m,
default) and ``performance`` (YOLOX-x + RTMPose-x).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pevl.data.pose.base import PoseExtractor
from pevl.errors import PevlError

INSTALL_HINT = "pip install 'pevl[rtmpose]'"
MODES = ("lightweight", "balanced", "performance")


def _import_rtmlib() -> Any:
    try:
        import rtmlib
    except ImportError as err:
        raise PevlError(
            f"the 'rtmlib' pose backend needs rtmlib and onnxruntime ({err}); install: {INSTALL_HINT}"
        ) from None
    return rtmlib


class RTMLibExtractor(PoseExtractor):
    """YOLOX + RTMPose through rtmlib: every person of every frame, COCO-17 pixels.

    Args:
        mode: ``"lightweight"``, ``"balanced"`` or ``"performance"``.
        device: ``"cpu"``, ``"cuda"`` or ``"mps"``.
        backend: rtmlib inference backend (``"onnxruntime"``, ``"opencv"`` or ``"openvino"``).
    """

    name = "rtmlib"

    def __init__(self, mode: str = "balanced", device: str = "cpu", backend: str = "onnxruntime") -> None:
        if mode not in MODES:
            raise PevlError(f"unknown rtmlib mode {mode!r} (choose from {', '.join(MODES)})")
        rtmlib = _import_rtmlib()
        self.mode = mode
        self._body = rtmlib.Body(mode=mode, to_openpose=False, backend=backend, device=device)

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Estimate every person's pose in one RGB frame."""
        bgr = np.ascontiguousarray(frame[..., ::-1])  # rtmlib follows OpenCV's BGR convention
        detector, pose_model = getattr(self._body, "det_model", None), getattr(self._body, "pose_model", None)
        if detector is not None and pose_model is not None:
            # Run the two stages ourselves: given no person box, rtmlib's RTMPose would estimate a pose on the
            # whole image, inventing a person in empty frames.
            boxes = detector(bgr)
            if len(boxes) == 0:
                return np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32)
            keypoint, score = pose_model(bgr, bboxes=boxes)
        else:
            keypoint, score = self._body(bgr)
        keypoint = np.asarray(keypoint, dtype=np.float32).reshape(-1, 17, 2)
        # RTMPose's SimCC confidences are not probabilities and can exceed 1: clip them into [0, 1].
        score = np.clip(np.asarray(score, dtype=np.float32).reshape(-1, 17), 0.0, 1.0)
        return keypoint, score

    def close(self) -> None:
        """Drop the ONNX sessions."""
        self._body = None
