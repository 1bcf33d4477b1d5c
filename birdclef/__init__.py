"""birdclef: a Hydra + Lightning experiment framework for BirdCLEF+ 2025."""

__version__ = "0.1.0"
