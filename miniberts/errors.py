"""Errors that reach the user as one line (the CLI prints them without a stack trace)."""


class MinibertsError(Exception):
    """A user-facing error: its message is one line naming the file and what was expected."""


class CheckpointError(MinibertsError):
    """A checkpoint directory or file is missing, corrupt, or does not fit the model."""


class DataError(MinibertsError):
    """An input data file is missing, empty, or malformed."""
