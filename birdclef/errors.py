"""User-facing errors: one clear message that names the thing and the fix."""


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
