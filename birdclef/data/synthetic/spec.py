"""What the synthetic dataset holds: the spec, the classes and the planned recordings."""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd

from birdclef.core.errors import ConfigError
from birdclef.core.rows import ROW_SECONDS
from birdclef.data.synthetic.calls import TAXA

COLLECTIONS = ("XC", "iNat", "CSA")
VOICES = ("formant", "espeak")
TYPES = {
    "Aves": ["song", "call", "flight call", "alarm call"],
    "Amphibia": ["call"],
    "Insecta": ["song"],
    "Mammalia": ["call", "growl"],
}
RATINGS = np.arange(1.0, 5.5, 0.5)  # Xeno-canto grades in half steps
COLLECTION_SHARES = (0.6, 0.3, 0.1)  # XC, iNat, CSA
UNRATED_XC_SHARE = 0.1  # XC rows with rating 0 (unrated)
MIN_SECONDS, LONG_SECONDS = (
    1.0,
    60.0,
)  # s: shortest recording; "long" recordings are 60 s .. max_seconds
DURATION_SPREAD = 0.9  # sigma of the log-normal recording length around median_seconds
INTRO_SECONDS = (2.0, 6.0)  # s, length of a spoken introduction
INTRO_MIN_SECONDS = 8.0  # s, recordings shorter than this get no introduction
SILENCE_SECONDS = (2.0, 10.0)  # s, length of a silent stretch (at most a third of the recording)
SILENCE_MIN_SECONDS = 12.0  # s, recordings shorter than this get no silent stretch


@dataclass(frozen=True)
class SynthSpec:
    """Size and difficulty of the synthetic dataset (conf/synth/*.yaml)."""

    seed: int = 0
    sample_rate: int = 32000  # Hz
    n_classes: int = 24
    taxon_mix: dict = field(
        default_factory=lambda: {"Aves": 0.6, "Amphibia": 0.15, "Insecta": 0.15, "Mammalia": 0.1}
    )
    max_recordings: int = 20  # recordings of the most common class
    tail_power: float = 0.85  # class k has max_recordings / k**tail_power recordings (at least 1)
    median_seconds: float = 10.0  # s
    long_fraction: float = 0.08  # share of recordings 60 s .. max_seconds long
    max_seconds: float = 120.0  # s
    snr_db: tuple = (0.0, 25.0)  # dB, call level over noise in train_audio
    intro_fraction: float = 0.3  # recordings opening with a spoken introduction
    silence_fraction: float = 0.3  # recordings with a silent stretch inside
    secondary_fraction: float = 0.25  # recordings with audible secondary species
    outside_secondary_fraction: float = (
        0.05  # recordings naming a secondary label outside the taxonomy
    )
    n_train_soundscapes: int = 6
    n_test_soundscapes: int = 8
    soundscape_seconds: int = 60  # s
    soundscape_snr_db: tuple = (0.0, 20.0)  # dB
    species_per_soundscape: tuple = (1, 4)
    voice: str = (
        "formant"  # spoken intros: formant (a voiced toy) | espeak (real speech, espeak-ng)
    )

    @classmethod
    def from_config(cls, cfg) -> SynthSpec:
        values = dict(cfg)
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(
                f"synth has unknown key(s) {unknown}; valid keys: {[f.name for f in fields(cls)]}."
            )
        for key in ("snr_db", "soundscape_snr_db", "species_per_soundscape"):
            if key in values:
                values[key] = tuple(values[key])
        if "taxon_mix" in values:
            values["taxon_mix"] = dict(values["taxon_mix"])
        spec = cls(**values)
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.n_classes < 2 or self.max_recordings < 1:
            raise ConfigError(
                f"synth.n_classes={self.n_classes} must be >= 2 and synth.max_recordings >= 1."
            )
        if set(self.taxon_mix) - set(TAXA) or min(self.taxon_mix.values()) < 0:
            raise ConfigError(
                f"synth.taxon_mix keys must be among {TAXA} with non-negative shares."
            )
        if self.soundscape_seconds % ROW_SECONDS:
            raise ConfigError(
                f"synth.soundscape_seconds={self.soundscape_seconds} must be a multiple of the "
                f"{ROW_SECONDS}-s scored rows."
            )
        if self.voice not in VOICES:
            raise ConfigError(f"synth.voice={self.voice!r} must be one of {VOICES}.")
        low, high = self.species_per_soundscape
        if not 1 <= low <= high:
            raise ConfigError(
                f"synth.species_per_soundscape={self.species_per_soundscape} must be 1 <= low <= high."
            )

    def as_dict(self) -> dict:
        """The spec as it keys the dataset's folder; `voice` only when not the formant toy,
        so the folders of datasets made before the option existed keep their names."""
        values = asdict(self)
        if values["voice"] == "formant":
            del values["voice"]
        return values


def _codes(n: int, rng: np.random.Generator, taken: set) -> list[str]:
    out = []
    while len(out) < n:
        code = "".join(rng.choice(list(string.ascii_lowercase), 6)) + "1"
        if code not in taken:
            taken.add(code)
            out.append(code)
    return out


def plan_classes(spec: SynthSpec, rng: np.random.Generator) -> pd.DataFrame:
    """The taxonomy: eBird-like codes for birds, iNaturalist-like numbers for the rest."""
    shares = np.array([spec.taxon_mix.get(t, 0.0) for t in TAXA], dtype=float)
    counts = np.floor(shares / shares.sum() * spec.n_classes).astype(int)
    counts[np.argsort(-shares)[: spec.n_classes - counts.sum()]] += 1
    taken: set = set()
    rows = []
    for taxon, count in zip(TAXA, counts, strict=True):
        bands = rng.permutation((np.arange(count) + 0.5) / max(count, 1))
        if taxon == "Aves":
            labels = _codes(count, rng, taken)
        else:
            labels = [
                str(x) for x in rng.choice(np.arange(10_000, 2_000_000), count, replace=False)
            ]
        for i, (label, band) in enumerate(zip(labels, bands, strict=True)):
            inat = "" if taxon == "Aves" else label
            rows.append(
                (
                    label,
                    inat,
                    f"Synthetica {taxon.lower()} {i}",
                    f"Synthetic {taxon} {i}",
                    taxon,
                    float(band),
                )
            )
    return pd.DataFrame(
        rows,
        columns=[
            "primary_label",
            "inat_taxon_id",
            "scientific_name",
            "common_name",
            "class_name",
            "band",
        ],
    )


def plan_recordings(
    spec: SynthSpec, taxonomy: pd.DataFrame, rng: np.random.Generator
) -> pd.DataFrame:
    """One row per train_audio recording, with the train.csv columns and how to render it."""
    classes = taxonomy["primary_label"].tolist()
    ranks = rng.permutation(len(classes)) + 1
    counts = np.maximum(1, np.round(spec.max_recordings / ranks**spec.tail_power)).astype(int)
    rows = []
    serial = 100_000
    for taxon_row, count in zip(taxonomy.itertuples(), counts, strict=True):
        for _ in range(count):
            serial += 1
            collection = str(rng.choice(COLLECTIONS, p=COLLECTION_SHARES))
            rating = 0.0
            if collection == "XC" and rng.random() > UNRATED_XC_SHARE:
                rating = float(rng.choice(RATINGS, p=_rating_weights()))
            if rng.random() < spec.long_fraction:
                seconds = rng.uniform(LONG_SECONDS, spec.max_seconds)
            else:
                seconds = rng.lognormal(np.log(spec.median_seconds), DURATION_SPREAD)
                seconds = float(np.clip(seconds, MIN_SECONDS, LONG_SECONDS - 1))
            others = [c for c in classes if c != taxon_row.primary_label]
            audible = []
            if rng.random() < spec.secondary_fraction:
                audible = rng.choice(others, int(rng.integers(1, 3)), replace=False).tolist()
            secondary = list(audible)
            if rng.random() < spec.outside_secondary_fraction:
                secondary.append(str(rng.choice(["unknwn1", "outsid1", "1000001"])))
            has_intro = seconds > INTRO_MIN_SECONDS and rng.random() < spec.intro_fraction
            intro = float(rng.uniform(*INTRO_SECONDS)) if has_intro else 0.0
            silence = (0.0, 0.0)
            if seconds > SILENCE_MIN_SECONDS and rng.random() < spec.silence_fraction:
                length = float(
                    rng.uniform(SILENCE_SECONDS[0], min(SILENCE_SECONDS[1], seconds / 3))
                )
                silence = (float(rng.uniform(intro + 1.0, seconds - length)), length)
            stem = f"{collection}{serial}"
            types = TYPES[taxon_row.class_name]
            rows.append({
                "primary_label": taxon_row.primary_label, "secondary_labels": secondary,
                "type": rng.choice(types, int(rng.integers(0, min(2, len(types)) + 1)), replace=False).tolist(),
                "filename": f"{taxon_row.primary_label}/{stem}.ogg", "collection": collection,
                "rating": rating, "url": f"https://example.org/synthetic/{stem}",
                "latitude": round(float(rng.uniform(6.0, 8.0)), 4), "longitude": round(float(rng.uniform(-74.5, -73.0)), 4),
                "scientific_name": taxon_row.scientific_name, "common_name": taxon_row.common_name,
                "author": f"Synthetic recordist {int(rng.integers(1, 20))}", "license": "CC0 (synthetic)",
                "seconds": seconds, "snr_db": float(rng.uniform(*spec.snr_db)), "intro_s": intro,
                "silence": silence, "audible_secondary": audible,
            })  # fmt: skip
    return pd.DataFrame(rows)


def _rating_weights() -> np.ndarray:
    weights = np.linspace(0.2, 1.0, len(RATINGS)) ** 2
    return weights / weights.sum()
