"""The heavy half: read datasets, run the teachers once over every video (Dask) and write a store.

Nothing in `mtvad.students` or `mtvad.scoring` imports this package (an import-linter contract checks it).
"""
