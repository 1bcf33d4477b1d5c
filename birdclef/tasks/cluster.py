"""Task `cluster`: the study's frame clustering of a few recordings, figures and a settings table.

python run.py task=cluster [task.features=mfcc] [task.continuity=index]
On the synthetic set each setting is scored (ARI / NMI) against the known segments of
train_audio_segments.csv; on other folders only the figures are made.
"""

from __future__ import annotations

import logging
import time
from itertools import product
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig
from tqdm.auto import tqdm

from birdclef.analysis import cluster as C
from birdclef.analysis import figures
from birdclef.analysis.eda import load_inputs, markdown_table, parse_list_loose, spectral_frontends
from birdclef.core.errors import ConfigError, DataError
from birdclef.core.io import write_csv, write_text
from birdclef.data.audio import audio_seconds, load_audio
from birdclef.data.root import data_root
from birdclef.runs.envelope import run_dir, task

log = logging.getLogger(__name__)

SEGMENTS = "train_audio_segments.csv"  # the synthetic set's truth (birdclef.data.synthetic)
KINDS = ("call", "secondary", "voice", "silence")


def pick_recordings(train: pd.DataFrame, root: Path, segments: pd.DataFrame | None, s) -> list[str]:
    """The recordings to cluster: `recordings` if given, else the `n_recordings` with the most
    kinds of known segment (any, without a segments file), ties by name, up to `max_seconds`."""
    known = set(train["filename"])
    if s.recordings:
        unknown = [f for f in s.recordings if f not in known]
        if unknown:
            raise ConfigError(
                f"task.recordings {unknown[:5]} are not in train.csv's filename column "
                f"(e.g. {sorted(known)[:3]}); give them as <label>/<file>.ogg."
            )
        return list(s.recordings)
    kinds = pd.Series(0, index=sorted(known))
    if segments is not None:
        seen = segments[segments["kind"].isin(KINDS)].groupby("filename")["kind"].nunique()
        kinds = kinds.add(seen, fill_value=0).loc[kinds.index]
    order = sorted(kinds.index, key=lambda f: (-kinds[f], f))
    picked = []
    for name in order:
        if len(picked) == int(s.n_recordings):
            break
        if audio_seconds(root / "train_audio" / name) <= float(s.max_seconds):
            picked.append(name)
    if not picked:
        raise DataError(
            f"no recording of {root / 'train_audio'} is at most task.max_seconds="
            f"{s.max_seconds} s long; raise it or list task.recordings."
        )
    return picked


def settings_grid(s) -> list[tuple[str, str, str]]:
    grid = []
    for features, method, continuity in product(
        s.sweep.features, s.sweep.methods, s.sweep.continuity
    ):
        C.check_settings(method, continuity, features)
        if continuity == "connectivity" and method not in C.LINKAGES:
            continue  # only agglomerative clustering takes a connectivity graph
        grid.append((features, method, continuity))
    return grid


@task
def run(cfg: DictConfig) -> dict:
    started = time.perf_counter()
    s = cfg.task
    for method in s.methods:
        C.check_settings(method, s.continuity, s.features)
    root = data_root(cfg)
    if not root.is_dir():
        raise DataError(
            f"data.root={root} does not exist; point it at a competition-layout folder."
        )
    out = run_dir(cfg)
    train, _ = load_inputs(root)
    for column in ("filename", "primary_label"):
        if column not in train:
            raise DataError(
                f"{root / 'train.csv'} has no {column!r} column; task=cluster needs it."
            )
    segments = pd.read_csv(root / SEGMENTS) if (root / SEGMENTS).is_file() else None
    if segments is None:
        log.warning("no %s under %s: figures only, no agreement scores", SEGMENTS, root)
    names = pick_recordings(train, root, segments, s)
    if segments is None:
        names = names[: int(s.figures)]  # nothing to score: only the drawn ones are clustered
    grid = settings_grid(s) if segments is not None else []
    mel, mfcc = spectral_frontends(cfg.frontend, cfg.sample_rate, s.n_mfcc)
    fronts = {"mel": mel, "mfcc": mfcc}
    pool, hop, sr = int(s.pool_frames), mel.hop_length, int(cfg.sample_rate)
    options = dict(eps=s.eps, min_samples=int(s.min_samples), eps_quantile=float(s.eps_quantile),
                   time_weight=float(s.time_weight), smooth_frames=int(s.smooth_frames), seed=int(s.seed))  # fmt: skip
    rows = []
    rows_by_name = train.set_index("filename")
    for i, name in enumerate(tqdm(names, desc="clustering", unit="recording", leave=False)):
        row = rows_by_name.loc[name]
        row = row.iloc[0] if isinstance(row, pd.DataFrame) else row
        primary = str(row["primary_label"]).strip()
        labels = {primary, *parse_list_loose(row.get("secondary_labels", "[]"))}
        k = int(s.n_clusters) if s.n_clusters is not None else len(labels) + 1
        frames = mel.frames(load_audio(root / "train_audio" / name, sr))
        points = {f: C.frame_features(frames, fronts[f], pool) for f in C.FEATURES}
        truth = None
        if segments is not None:
            mine = segments[segments["filename"] == name]
            truth = C.truth_frames(mine, primary, len(points["mel"]), pool * hop / sr)
        strips = {} if truth is None else {"truth": truth}
        for method in s.methods if i < int(s.figures) else ():
            found = C.cluster(points[s.features], method, k, s.continuity, **options)
            strips[method] = found
            if truth is not None:
                ari, nmi = C.agreement(truth, found)
                strips[f"{method} (ARI {ari:.2f})"] = strips.pop(method)
        if i < int(s.figures):
            fig = figures.spectrogram_with_strips(
                mel.finish(frames.T).numpy(), strips, sr, hop, pool * hop,
                title=f"{name}: {s.features} clusters, k={k}, continuity={s.continuity}",
            )  # fmt: skip
            figures.save_figure(fig, out / "figures" / f"{Path(name).stem}.png")
        for features, method, continuity in grid:
            found = C.cluster(points[features], method, k, continuity, **options)
            ari, nmi = C.agreement(truth, found)
            rows.append({"recording": name, "features": features, "method": method,
                         "continuity": continuity, "k": k, "clusters": len(set(found.tolist())),
                         "ari": ari, "nmi": nmi})  # fmt: skip
    metrics = {"cluster/recordings": len(names)}
    if rows:
        metrics.update(write_tables(pd.DataFrame(rows), out, s))
    metrics["cluster/seconds"] = time.perf_counter() - started
    log.info(
        "clustered %d recording(s) into %s (%.1f s)", len(names), out, metrics["cluster/seconds"]
    )
    return metrics


def write_tables(per_recording: pd.DataFrame, out: Path, s) -> dict:
    """settings.csv / settings.md: mean ARI and NMI per setting, best first; and the metrics."""
    write_csv(out / "per_recording.csv", per_recording)
    keys = ["features", "method", "continuity"]
    table = per_recording.groupby(keys, sort=False).agg(
        ari=("ari", "mean"), ari_std=("ari", "std"), nmi=("nmi", "mean"),
        clusters=("clusters", "mean"), recordings=("recording", "nunique"),
    ).reset_index().sort_values(["ari", "nmi"], ascending=False, ignore_index=True)  # fmt: skip
    write_csv(out / "settings.csv", table)
    pivot = table.pivot_table(index="method", columns=["features", "continuity"], values="ari")
    pivot = pivot.reindex([m for m in C.METHODS if m in pivot.index])
    pivot = pivot[
        sorted(pivot.columns, key=lambda fc: (C.FEATURES.index(fc[0]), C.CONTINUITY.index(fc[1])))
    ]
    pivot.columns = [f"{f} / {c}" for f, c in pivot.columns]
    text = [f"# Clustering settings by agreement with the known segments ({table['recordings'].max()} "
            "recordings; mean over recordings)\n", "## ARI by method (rows) and features / continuity\n",
            markdown_table(pivot.rename_axis("method"), floatfmt=".3f", index=True),
            "\n## Every setting, best first\n", markdown_table(table, floatfmt=".3f")]  # fmt: skip
    write_text(out / "settings.md", "\n".join(text) + "\n")
    best = table.iloc[0]
    metrics = {"cluster/best_ari": float(best["ari"]), "cluster/best_nmi": float(best["nmi"]),
               "cluster/best_setting": f"{best['features']}/{best['method']}/{best['continuity']}"}  # fmt: skip
    for features in table["features"].unique():
        mean = table[(table["features"] == features) & (table["continuity"] == "none")]["ari"]
        if len(mean):
            metrics[f"cluster/{features}_mean_ari"] = float(mean.mean())
    chosen = table[(table["features"] == s.features) & (table["continuity"] == s.continuity)]
    for r in chosen.itertuples():
        metrics[f"cluster/{r.method}_ari"] = float(r.ari)
        metrics[f"cluster/{r.method}_nmi"] = float(r.nmi)
    return metrics
