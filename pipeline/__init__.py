"""pipeline: run the teachers once over every video of a dataset and write a Zarr store (see cache_schema.md)."""

__version__ = "0.1.0"
