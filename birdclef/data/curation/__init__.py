"""Data curation, stage 2: per-segment detectors (YAMNet, Silero VAD), their manifest, the segment filter."""
