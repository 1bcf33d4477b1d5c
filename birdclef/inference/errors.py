"""The one error the submission code raises for input a user can fix (kept free of the framework)."""


class InferenceError(ValueError):
    """A model, folder or setting the submission cannot use; the message names it and the fix.

    `birdclef.errors.user_error` treats it as a user error (no traceback under `run.py`).
    """
