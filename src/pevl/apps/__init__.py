"""What a user runs on videos: single-clip prediction, explanation figures, the demo."""
