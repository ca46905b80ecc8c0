"""vaekit's exception types.

Library code raises these with a message a user can act on (what is wrong and how to fix
it); only ``cli.py`` turns them into one ``error: ...`` line and exit status 2.
"""


class VaekitError(ValueError):
    """A user's mistake or bad input: wrong option, bad file, missing run directory."""


class ConfigError(VaekitError):
    """An unknown key, a wrong type or a value out of range in a configuration."""


class DataError(VaekitError):
    """A data file or folder that cannot be read, or data that does not fit the model."""


class CheckpointError(VaekitError):
    """A run directory or checkpoint that is missing, corrupt or from another model."""


class TrainingDiverged(VaekitError):
    """A non-finite loss or gradient stopped training (the NaN guard)."""


class WriteError(VaekitError):
    """A file could not be written: a full disk, a file-size limit, no permission."""
