"""The tasks of `run.py`, each a `run(cfg) -> dict`: train, synth, mix, predict, score, export, bench, bundle, pseudo_label, distill.

A task module is the only place that wires packages together; nothing below imports it.
"""
