"""Task `bench`: CPU time of each model and blend end to end, projected to the hidden test set.

    python run.py task=bench "predict.models=[A.onnx,B.onnx,C.ckpt]" data.root=DATA

For each model alone: where a file's time goes, in milliseconds per file (medians, one process,
one thread): decode, STFT (windowed FFT and power), mel (filter bank and dB), windows (cutting
the file's frames into 5-s windows), model, rows (scores to rows) and the real-time factor of the whole path (decode + frames + model + rows) in
one process with one thread, one process with all threads, and one process per core with
one thread each. The real-time factor is the steady rate with every worker busy (the sum of
each worker's audio over its own busy span), which is what 700 files see. For each blend of up to `task.max_blend` models: the real-time factor with
one process per core, and the validation AUC of the blend on the data root's labelled
soundscapes. The projected wall time of the hidden test set (`test_files` x `test_seconds`
of audio) is `audio / real-time factor x cpu_factor`; the best blend by validation AUC
whose projection fits `budget_minutes` is picked. Start-up (imports, loading models) is
excluded from the real-time factors and reported apart.
"""

from __future__ import annotations

import itertools
import logging
import statistics
import time
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from birdclef.core.cpus import available_cpus
from birdclef.core.errors import ConfigError
from birdclef.core.io import write_text
from birdclef.core.metric import read_solution, score_tables
from birdclef.data.metadata import find_soundscape_labels
from birdclef.data.root import data_root
from birdclef.inference.predict import (
    busy_seconds,
    list_audio,
    predict_files,
    steady_realtime_factor,
)
from birdclef.inference.runtime import settings_from_group
from birdclef.inference.submission import assemble
from birdclef.runs.envelope import run_dir, task

log = logging.getLogger(__name__)


def _timed(models, files, threads, workers, s) -> tuple[float, list, float]:
    """(real-time factor, results, start-up seconds) of one end-to-end pass."""
    tic = time.perf_counter()
    results = predict_files(
        models, files, threads, workers, s["stride_seconds"], s["sed_frames"], False,
        s["openvino_precision"],
    )  # fmt: skip
    startup = time.perf_counter() - tic - busy_seconds(results)
    return steady_realtime_factor(results), results, startup


def _median_ms(results, key) -> float:
    values = [r.timing[key] for r in results if key in r.timing]
    return 1000.0 * statistics.median(values) if values else float("nan")


def _name(path: str) -> str:
    """`<run>/<file>` for checkpoints and exports (`<run>/export/model_int8.onnx` -> run/int8)."""
    p = Path(path)
    if p.parent.name in ("checkpoints", "export"):
        return f"{p.parent.parent.name}/{p.name}"
    if p.name == "openvino" and p.parent.name == "export":
        return f"{p.parent.parent.name}/openvino"
    return f"{p.parent.name}/{p.name}"


@task
def run(cfg: DictConfig) -> dict:
    b = cfg.task
    out = run_dir(cfg)
    root = data_root(cfg)
    s = settings_from_group(cfg.predict, root)
    cores = available_cpus()
    folder = Path(b.soundscapes) if b.soundscapes else root / "test_soundscapes"
    files = list_audio(folder)[: b.files] if b.files else list_audio(folder)
    if b.max_blend < 1 or b.repeats < 1 or b.cpu_factor <= 0:
        raise ConfigError("task.max_blend and task.repeats must be >= 1, task.cpu_factor > 0.")
    models = s["models"]
    names = [_name(m) for m in models]
    budget = 60.0 * float(b.budget_minutes)
    test_audio = float(b.test_files) * float(b.test_seconds)

    # validation scores of every model once; blends are assembled from them
    solution_path = Path(b.validation) if b.validation else find_soundscape_labels(root)
    solution = read_solution(solution_path) if solution_path else None
    if solution is not None:
        val_results = predict_files(
            models, list_audio(root / "test_soundscapes"), 1, cores, s["stride_seconds"],
            s["sed_frames"], False, s["openvino_precision"],
        )  # fmt: skip
        from birdclef.inference.loading import load_model

        classes = [load_model(m).classes for m in models]
        columns = [c for c in solution.columns if c != "row_id"]

    def val_auc(subset) -> float:
        if solution is None:
            return float("nan")
        picked = [_subset(r, subset) for r in val_results]
        submission, _ = assemble(
            picked, [classes[i] for i in subset], [names[i] for i in subset], columns,
            s["blend"], _weights(s, subset), s["power"], s["topk"], s["topk_power"],
            s["smooth_kernel"],
        )  # fmt: skip
        return score_tables(solution, submission)[0]

    rows = []
    for i, model in enumerate(models):
        settings = [(1, 1, "1 process x 1 thread")]
        if cores > 1:
            settings += [(cores, 1, f"1 process x {cores} threads"),
                         (1, cores, f"{cores} processes x 1 thread")]  # fmt: skip
        for threads, workers, setting in settings:
            factors, startups, results = [], [], []
            for _ in range(b.repeats):
                factor, results, startup = _timed([model], files, threads, workers, s)
                factors.append(factor)
                startups.append(startup)
            rows.append(_row(names[i], setting, factors, startups, results, test_audio, b, budget)
                        | {"val AUC": val_auc([i]), "models": 1})  # fmt: skip
    for size in range(2, min(b.max_blend, len(models)) + 1):
        for subset in itertools.combinations(range(len(models)), size):
            factors, startups = [], []
            for _ in range(b.repeats):
                factor, results, startup = _timed([models[i] for i in subset], files, 1, cores, s)
                factors.append(factor)
                startups.append(startup)
            name = f"{s['blend']} blend: " + " + ".join(names[i] for i in subset)
            row = _row(name, f"{cores} processes x 1 thread", factors, startups, results,
                       test_audio, b, budget)  # fmt: skip
            rows.append(row | {"val AUC": val_auc(list(subset)), "models": size})
    table = pd.DataFrame(rows)
    fitting = table[table["fits budget"] & table["val AUC"].notna()]
    best = fitting.sort_values(["val AUC", "x real time"], ascending=False).head(1)
    markdown = _markdown(table, best, b, cores, len(files), sum(r.seconds for r in results))
    target = Path(b.output) if b.output else out / "bench.md"
    write_text(target, markdown)
    table.to_csv(out / "bench.csv", index=False)
    metrics = {
        "bench/best": best["model"].iloc[0] if len(best) else None,
        "bench/best_val_auc": float(best["val AUC"].iloc[0]) if len(best) else float("nan"),
        "bench/best_projected_minutes": float(best["projected min"].iloc[0]) if len(best) else float("nan"),
        "bench/max_x_real_time": float(table["x real time"].max()),
    }  # fmt: skip
    log.info("\n%s", markdown)
    return metrics


def _subset(result, subset):
    from dataclasses import replace

    return replace(
        result,
        scores={k: result.scores[i] for k, i in enumerate(subset)} if result.error is None else {},
    )


def _weights(s, subset):
    return None if s["weights"] is None else [s["weights"][i] for i in subset]


def _row(name, setting, factors, startups, results, test_audio, b, budget) -> dict:
    factor = statistics.median(factors)
    projected = test_audio / factor * float(b.cpu_factor)
    models = sorted(k for k in results[0].timing if k.startswith("model") and k != "model")
    return {
        "model": name,
        "setting": setting,
        "x real time": factor,
        "spread": f"{min(factors):.0f}-{max(factors):.0f}",
        "decode ms/file": _median_ms(results, "decode"),
        "stft ms/file": _median_ms(results, "stft"),
        "mel ms/file": _median_ms(results, "mel"),
        "windows ms/file": _windows_ms(results),
        "frames ms/file": _median_ms(results, "frames"),
        "model ms/file": sum(_median_ms(results, k) for k in models),
        "rows ms/file": _median_ms(results, "rows"),
        "start-up s": statistics.median(startups),
        "projected min": projected / 60.0,
        "fits budget": projected <= budget,
    }


def _windows_ms(results) -> float:
    """Frames time less STFT and mel; a model without a log-mel front end: all its frames time."""
    frames, stft, mel = (_median_ms(results, k) for k in ("frames", "stft", "mel"))
    return frames if stft != stft else frames - stft - mel


def _ms(value: float) -> str:
    """Milliseconds, or '-' where a model has no such part (a foreign model's own front end)."""
    return "-" if value != value else f"{value:.1f}"


def _markdown(
    table: pd.DataFrame, best: pd.DataFrame, b, cores: int, n_files: int, audio: float
) -> str:
    lines = [
        f"Timed on {n_files} files ({audio:.0f} s of audio), {b.repeats} passes, medians; "
        f"{cores} CPUs; projection: {b.test_files} x {b.test_seconds} s, CPU factor "
        f"{b.cpu_factor}, budget {b.budget_minutes} min. ms/file are per file of the timed set "
        "(one process): decode, STFT (windowed FFT, power), mel (filter bank, dB), windows (cutting "
        "5-s windows; a model without a log-mel front end: its whole front end), model, rows; "
        "x real time is the steady rate with every worker busy (start-up and the "
        "workers' staggered start not counted).",
        "",
        "| model | setting | x real time (range) | decode ms | STFT ms | mel ms | windows ms "
        "| model ms | rows ms | start-up s | projected min | fits | val AUC |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for _, d in table.iterrows():
        lines.append(
            f"| {d['model']} | {d['setting']} | {d['x real time']:.0f} ({d['spread']}) | "
            f"{d['decode ms/file']:.1f} | {_ms(d['stft ms/file'])} | {_ms(d['mel ms/file'])} | "
            f"{_ms(d['windows ms/file'])} | "
            f"{d['model ms/file']:.1f} | {_ms(d['rows ms/file'])} | "
            f"{d['start-up s']:.1f} | {d['projected min']:.1f} | "
            f"{'yes' if d['fits budget'] else 'no'} | {d['val AUC']:.3f} |"
        )
    if len(best):
        lines += ["", f"Best within budget by validation AUC: **{best['model'].iloc[0]}** "
                      f"({best['val AUC'].iloc[0]:.3f}, {best['projected min'].iloc[0]:.1f} min projected)."]  # fmt: skip
    else:
        lines += ["", "No model or blend with a validation AUC fits the budget."]
    return "\n".join(lines) + "\n"
