"""The store: the contract between the two halves, in code (`cache_schema.md` is the same for people).

`schema` (arrays, dtypes, shapes, chunking, schema version), `safety` (the data-type and codec allow-list),
`locations` (folder, packed .zip or fsspec URL), `access` (open, create, validate, read, write), `summary`,
`show`, `pack`, `verify`, `diff` (`vad store ...`). It imports neither half (an import-linter contract checks it):
`mtvad.precompute` writes stores with it, `mtvad.students` and `mtvad.scoring` read them with it.
"""
