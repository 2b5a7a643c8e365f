"""vad: lightweight students, scores and reports that read only from a teacher store."""

__version__ = "0.1.0"
