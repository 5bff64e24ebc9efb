"""What the paper's attention figures (Figs. 8-12) draw for one model on one clip: a plain data record."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BACKGROUND = 17
"""Group id of the background token in :attr:`Explanation.grouping` (joints are 0-16, COCO-17 order)."""


@dataclass
class Explanation:
    """Everything the figures of one model on one clip draw."""

    model_name: str  # e.g. the preset, shown in titles
    labels: list[str]  # the label texts that were scored
    probabilities: np.ndarray  # [C] class probabilities
    predicted: int  # index of the class the attention figures show (the top class unless another was asked for)
    frames: np.ndarray  # [T_v, S, S, 3] uint8 centre crops (what the model sees, before resizing)
    frame_numbers: np.ndarray  # [T_v] frame numbers of those crops in the video
    joints: np.ndarray  # [T_v, J, 2] joint pixels in the crops (the pose frame aligned with each RGB frame)
    joint_visible: np.ndarray  # [T_v, J] bool, detected joints
    grid: tuple[int, int]  # patch grid (rows, cols)
    temporal: np.ndarray  # [T] attention over frames for the predicted class (sums to one)
    temporal_frames: np.ndarray  # [T] frame numbers of the temporal cells
    temporal_source: str  # how ``temporal`` was computed
    joint_weights: np.ndarray | None = None  # [T_v, J] P2V-R attention over joints (sums to one per frame)
    patch_heat: np.ndarray | None = None  # [T_v, rows, cols] P2V-R attention over patches (sums to one per frame)
    grouping: np.ndarray | None = None  # [T_v, rows, cols] V2P-R group per patch: joint 0-16 or BACKGROUND
    phrases: list[str] = field(default_factory=list)  # phrases of the predicted label
    phrase_attention: np.ndarray | None = None  # [P, T] phrase -> frame attention (rows sum to one)
    notes: list[str] = field(default_factory=list)  # caveats shown on the page

    @property
    def predicted_label(self) -> str:
        """Text of the predicted class."""
        return self.labels[self.predicted]

    def top_k(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most likely labels with their probabilities."""
        order = np.argsort(-self.probabilities)[:k]
        return [(self.labels[i], float(self.probabilities[i])) for i in order]
