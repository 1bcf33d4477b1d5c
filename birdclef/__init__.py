"""birdclef: a Hydra + Lightning experiment framework for BirdCLEF+ 2025.

The packages form layers, lowest first. A module may import its own package and the
layers below it, never one above (tests/test_layers.py checks this and that no import
cycle exists):

    core       errors, the 5-s row grid, the metric, activations, atomic I/O (no torch)
    inference  what a submission needs: backends, blends, post-processing, the writer
    data       metadata, audio, features, cache, labels, splits, filters, the DataModule
    models     nets as plain nn.Modules
    modules    LightningModules, losses, metric accumulators, callbacks
    analysis   EDA, clustering, embeddings, run figures
    runs       the run envelope, sweep jobs, the sweep report
    tasks      one module per task, `run(cfg) -> dict`; the only place packages are wired together
"""

__version__ = "0.1.0"

LAYERS = ("core", "inference", "data", "models", "modules", "analysis", "runs", "tasks")
