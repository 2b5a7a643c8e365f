"""The light half, part 2: trained students against their teachers into a scores file (`score`, `scores_file`),
then smoothing, calibration and fusion (`postprocess`), metrics (`metrics`, `evaluate`) and figures (`report`).
Never imports `mtvad.precompute` (an import-linter contract checks it)."""
