"""The light half, part 1: the two students of the paper, trained from a store alone (`config`, `data`,
`models`, `loss`, `train`, `checkpoint`). Never imports `mtvad.precompute` (an import-linter contract checks it)."""
