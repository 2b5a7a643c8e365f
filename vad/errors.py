"""Errors that the command-line tools report as one line, with a non-zero exit code."""


class VadError(Exception):
    """Base class of every error a user can cause with bad input (a path, a file, a store)."""


class StoreError(VadError):
    """A store is missing, malformed, of another schema version, or built by other teachers."""


class DatasetError(VadError):
    """A dataset folder, frame, label or mask file is missing or malformed."""


class TeacherError(VadError):
    """A teacher cannot be built or run (unknown name, missing weights, missing runtime)."""
