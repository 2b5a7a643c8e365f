# Set-up and jobs. Every target installs what it needs first (`make install` is idempotent).
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DATASET ?= ped2
DATA    ?= data/$(DATASET)
STORE   ?= stores/$(DATASET).zarr
PRESET  ?= cpu-motion
WORKERS ?=
PYTEST_ARGS ?=

.PHONY: install test precompute demo bench bench-teachers bench-reductions bench-ped2 bench-train clean help

help:
	@echo "make demo        synthetic dataset -> store -> train both students (small) -> score -> report -> AUC table"
	@echo "make test        run the test suite"
	@echo "make precompute  DATASET=ped2 DATA=path/to/ped2 [STORE=stores/ped2.zarr] [PRESET=cpu-motion] [WORKERS=2]"
	@echo "make bench       throughput, overhead, scaling, storage and memory, and a 720p H.264 clip it writes (needs ../shared)"
	@echo "make bench-teachers  teacher quality on real Ped2 (needs ../shared and STORE=stores/ped2.zarr)"
	@echo "make bench-ped2  [PED2_PRESET=cpu-classes] the whole method on real Ped2 with the cpu recipe: training samples/s, time to beat the controls, scoring frames/s, AUC (needs ../shared; about an hour)"
	@echo "make bench-train  training samples/s and scoring frames/s of the students, before and after the CPU recipe's speed-ups, in one run [BENCH_STORE=stores/ped2-cpu-motion.zarr] (needs ../shared; a few minutes)"
	@echo "make bench-reductions  AUC of every frame reduction x calibration x fusion [SCORES=... STORE=...] (default: the demo's)"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch/torchvision first, pinned: pip takes these two from the local wheel cache where there is one
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[precompute,test,tflite]'
	touch $@

# the import contracts first (pyproject.toml [tool.importlinter]: the light half never imports the heavy one)
test: install
	$(BIN)/lint-imports --no-logo
	$(BIN)/python -m pytest $(PYTEST_ARGS)

precompute: install
	$(BIN)/vad precompute $(DATASET) --data $(DATA) --store $(STORE) --preset $(PRESET) $(if $(WORKERS),--workers $(WORKERS))

# The demo's students: small (64x64 inputs, 150 steps of 8 samples per branch) so that the whole demo runs in
# minutes on a 2-core CPU; a rerun resumes the finished checkpoints (no-op) and rescores. Validated every 50
# steps on held-out training videos; the checkpoint of the lowest validation loss (best.pt) is scored (last.pt
# for a run from before validation, which has none).
DEMO       ?= outputs/demo
DEMO_SIZE  ?= 64
DEMO_STEPS ?= 150
DEMO_STORE := stores/synth.zarr

demo: install
	test -f data/synth/Test/UCSDsynth.m || $(BIN)/vad synth data/synth --seed 0
	$(BIN)/vad precompute synth --data data/synth --store $(DEMO_STORE) --preset $(PRESET) $(if $(WORKERS),--workers $(WORKERS))
	$(BIN)/vad store info $(DEMO_STORE)
	for b in appearance motion; do \
	  $(BIN)/vad train --store $(DEMO_STORE) --branch $$b --size $(DEMO_SIZE) --max-steps $(DEMO_STEPS) \
	    --checkpoint-every 50 --out $(DEMO)/train $$(test -f $(DEMO)/train/$$b/last.pt && echo --resume) || exit 1; \
	done
	$(BIN)/vad score --store $(DEMO_STORE) $(foreach b,appearance motion,--checkpoint $(DEMO)/train/$(b)/$$(test -f \
	  $(DEMO)/train/$(b)/best.pt && echo best.pt || echo last.pt)) --out $(DEMO)/scores.zarr --maps --overwrite
	$(BIN)/vad report --scores $(DEMO)/scores.zarr --store $(DEMO_STORE) --out $(DEMO)/report
	$(BIN)/vad eval --scores $(DEMO)/scores.zarr --store $(DEMO_STORE) --out $(DEMO)/results.json
	@echo "report: $(DEMO)/report/index.html (figures), results: $(DEMO)/results.json"

bench: install
	$(BIN)/python benchmarks/bench_pipeline.py

bench-teachers: install
	$(BIN)/python benchmarks/bench_teachers.py --store $(STORE)

# Ped2 end to end (benchmarks/ped2_result.py): a PED2_PRESET store, `vad train` with the recipe's defaults,
# best.pt scored, evaluated, reported; prints the training figures and the AUC table, writes
# OUT/ped2_result.json. PED2_PRESET=cpu-classes needs the DeepLab file (MTVAD_MODELS, docs/teachers.md)
PED2_PRESET ?= cpu-motion
PED2_OUT ?= outputs/ped2-$(PED2_PRESET)
bench-ped2: install
	$(BIN)/python benchmarks/ped2_result.py --preset $(PED2_PRESET) --store stores/ped2-$(PED2_PRESET).zarr --out $(PED2_OUT)

# training and scoring speed of the students, before and after the CPU recipe's networks and bf16 (docs/benchmarks.md)
BENCH_STORE ?= stores/ped2-cpu-motion.zarr
bench-train: install
	test -d $(BENCH_STORE) || $(BIN)/vad precompute ped2 --data ../shared/data/ped2 --store $(BENCH_STORE) --preset cpu-motion
	$(BIN)/python benchmarks/bench_speed.py --store $(BENCH_STORE)

# every frame reduction x calibration x fusion of a scores file, controls beside (default: the demo's)
SCORES ?= $(DEMO)/scores.zarr
bench-reductions: install
	$(BIN)/python benchmarks/bench_reductions.py --scores $(SCORES) --store $(if $(filter $(SCORES),$(DEMO)/scores.zarr),$(DEMO_STORE),$(STORE))

clean:
	rm -rf stores data/synth .pytest_cache
