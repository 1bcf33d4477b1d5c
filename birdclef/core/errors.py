"""User-facing errors: one clear message that names the thing and the fix."""

from __future__ import annotations


class BirdclefError(Exception):
    """An error the user can fix (bad path, bad CSV, bad config value).

    The entry point prints only the message, without a traceback.
    """


class DataError(BirdclefError):
    """The data folder, a CSV or an audio file is missing or malformed."""


class ConfigError(BirdclefError):
    """A config value is out of range or inconsistent."""


class AudioError(DataError):
    """An audio file cannot be decoded or holds no usable samples."""


class InferenceError(BirdclefError, ValueError):
    """A model, folder or setting the submission cannot use; the message names it and the fix."""


def user_error(err: BaseException | None) -> BirdclefError | None:
    """The BirdclefError behind `err`: itself, or one it was raised `from`.

    Only explicit causes are followed (Hydra's instantiate wraps errors with
    `raise InstantiationException(...) from e`). An exception raised while a
    BirdclefError was being handled (its implicit `__context__`) is a real crash,
    not a user error, and keeps its traceback.
    """
    while err is not None:
        if isinstance(err, BirdclefError):
            return err
        err = err.__cause__
    return None
