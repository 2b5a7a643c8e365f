"""Errors that the command-line tools report as one line, with a non-zero exit code."""


class VadError(Exception):
    """Base class of every error a user can cause with bad input (a path, a file, a store)."""


class StoreError(VadError):
    """A store is missing, malformed, of another schema version, or built by other teachers."""


class DatasetError(VadError):
    """A dataset folder, frame, label or mask file is missing or malformed."""


class TeacherError(VadError):
    """A teacher cannot be built or run (unknown name, missing weights, missing runtime)."""


class ConfigError(VadError):
    """A training or scoring setting is invalid (unknown choice, bad size, conflicting flags)."""


class CheckpointError(VadError):
    """A checkpoint is missing, truncated, malformed, or was made from another store or schema."""


class EncoderWeightsError(VadError):
    """An encoder weights file is missing, unreadable, or does not fit the encoder it was given for."""


class TrainingDivergedError(VadError):
    """The loss became NaN or infinite: training stopped, the last good checkpoint was kept."""
