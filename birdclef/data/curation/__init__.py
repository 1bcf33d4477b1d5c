"""Data curation, stage 2: per-window detectors (YAMNet, Silero VAD), their manifest, the window filter."""
