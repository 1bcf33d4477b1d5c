"""Config names that changed: an old override on the command line fails with the new name.

`check_overrides` runs in `run.py` before Hydra composes the config, so `cluster=slurm`
says "launcher=slurm" instead of Hydra's "Could not find 'cluster/slurm'".
"""

from __future__ import annotations

from omegaconf import DictConfig

from birdclef.core.errors import ConfigError

# task settings that were groups of their own: old group -> the task whose `task.*` they are
TASK_SETTINGS = {
    "export": "export", "bench": "bench", "bundle": "bundle", "score": "score", "rounds": "rounds",
    "eda": "eda", "clustering": "cluster", "embed": "embed",
}  # fmt: skip
OLD_FILTERS = {  # filter=<old option> -> its stages
    "none": [],
    "rating": ["rating"],
    "yamnet": ["yamnet"],
    "voice": ["voice"],
    "rating_yamnet": ["rating", "yamnet"],
    "yamnet_voice": ["yamnet", "voice"],
    "rating_voice": ["rating", "voice"],
    "rating_yamnet_voice": ["rating", "yamnet", "voice"],
}
OLD_FILTER_KEYS = {  # filter.<old key> -> filter.<new key>
    "min_rating": "rating.min_rating",
    "keep_top": "rating.keep_top",
    "voice_drop": "voice.drop",
    "speech": "voice.detector",
    "vad_threshold": "voice.vad_threshold",
    "min_speech_seconds": "voice.min_speech_seconds",
}
RENAMED_KEYS = {  # whole keys
    "teacher.foreign.window_seconds": "teacher.foreign.input_seconds",
    # the DataModule's settings, grouped into its parts
    "data.cache_dir": "data.cache.dir",
    "data.cache_workers": "data.cache.workers",
    "data.val_fraction": "data.split.val_fraction",
    "data.min_val_recordings": "data.split.min_val_recordings",
    "data.folds": "data.split.folds",
    "data.fold": "data.split.fold",
    "data.train_windows": "data.windows.train",
    "data.val_windows": "data.windows.val",
    "data.crop": "data.windows.crop",
    "data.crop_seconds": "data.windows.crop_seconds",
    "data.batch_size": "data.loader.batch_size",
    "data.num_workers": "data.loader.num_workers",
    "data.sampler": "data.loader.sampler",
    "data.balance_power": "data.loader.balance_power",
}
REMOVED_KEYS = {  # keys that are now derived
    "model.n_features": "it is derived from the front end's bands; drop it",
    "model.embedding_dim": "it is derived from the front end's embedding size; drop it",
}


def new_name(override: str) -> str | None:
    """What to write instead of `override` (`key=value`), or None when it is current."""
    key, _, value = override.lstrip("+~").partition("=")
    group, _, rest = key.partition(".")
    if group == "cluster" and not rest:
        return f"launcher={value}: `cluster` (where multirun jobs run) is now `launcher`"
    if group in TASK_SETTINGS and rest:
        task = TASK_SETTINGS[group]
        return f"task.{rest}={value} with task={task}: a task's own settings are task.* now"
    if group in TASK_SETTINGS and not rest and value == "default":
        return f"nothing: the {group} group is gone, its settings are task.* of task={TASK_SETTINGS[group]}"
    if key == "filter" and value in OLD_FILTERS:
        stages = " ".join(f"filter.{s}.enabled=true" for s in OLD_FILTERS[value])
        stages = stages or "nothing (every stage is off by default)"
        return f"{stages}: the filter stages are three independent switches now"
    if group == "filter" and rest in OLD_FILTER_KEYS:
        return f"filter.{OLD_FILTER_KEYS[rest]}={value}"
    if key == "label" and value in ("informed", "multilabel"):
        return (
            "nothing: the loss picks the label rule now (softmax losses: label.m, label.null_class; "
            "sigmoid losses such as loss=bce: label.secondary_weight, label.smoothing)"
        )
    if key == "model" and value == "vae":
        return "task=embed (its VAE is task.vae.*): model=vae is gone"
    if key == "task" and value == "segments":
        return "task=curate"
    if key in RENAMED_KEYS:
        return f"{RENAMED_KEYS[key]}={value}"
    if key in REMOVED_KEYS:
        return f"nothing: {REMOVED_KEYS[key]}"
    return None


def check_overrides(args: list[str]) -> None:
    """Refuse the first old config name among command-line `args`, naming the new one."""
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        fix = new_name(arg)
        if fix is not None:
            raise ConfigError(f"{arg} is an old config name; write {fix}.")


def config_keys(node: DictConfig, prefix: str = ""):
    """Every dotted key of a composed config (interpolations are not resolved)."""
    for key in node:
        path = f"{prefix}.{key}" if prefix else str(key)
        yield path
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            yield from config_keys(child, path)


def check_config(cfg: DictConfig) -> None:
    """Refuse an old key that a config file (an experiment, a sweep) still sets: the group's
    schema is not strict, so it would be composed and silently ignored."""
    for key in config_keys(cfg):
        fix = new_name(f"{key}=...")
        if fix is not None:
            raise ConfigError(
                f"{key} (set by a config file: an experiment= or sweep file) is an old config "
                f"name; write {fix} there."
            )
