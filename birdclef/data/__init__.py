"""Data layer: metadata, audio decoding, windows, front end, cache, labels, splits."""
