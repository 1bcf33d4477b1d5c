"""Tasks of `run.py` for the submission path, each a `run(cfg) -> dict` (predict, score, export, bench, bundle)."""
