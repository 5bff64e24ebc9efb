"""Data: video decoding, frame sampling, transforms, poses (extraction, files, layouts) and datasets."""
