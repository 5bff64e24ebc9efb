"""Poses: extractors (mediapipe, rtmlib), the per-video cache, PYSKL skeleton files and joint layouts."""
