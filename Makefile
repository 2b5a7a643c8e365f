# Set-up and jobs. Every target installs what it needs first (`make install` is idempotent).
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DATASET ?= ped2
DATA    ?= data/$(DATASET)
STORE   ?= stores/$(DATASET).zarr
PRESET  ?= cpu
WORKERS ?=
PYTEST_ARGS ?=

.PHONY: install test precompute demo bench bench-teachers clean help

help:
	@echo "make demo        generate the synthetic dataset, precompute its store, show it (the main job)"
	@echo "make test        run the test suite"
	@echo "make precompute  DATASET=ped2 DATA=path/to/ped2 [STORE=stores/ped2.zarr] [PRESET=cpu] [WORKERS=2]"
	@echo "make bench       throughput, overhead, scaling, storage and memory benchmarks (needs ../shared)"
	@echo "make bench-teachers  teacher quality on real Ped2 (needs ../shared and STORE=stores/ped2.zarr)"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch/torchvision first, pinned: pip takes these two from the local wheel cache where there is one
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[test,tflite]'
	touch $@

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

precompute: install
	$(BIN)/pipeline precompute $(DATASET) --data $(DATA) --store $(STORE) --preset $(PRESET) $(if $(WORKERS),--workers $(WORKERS))

demo: install
	test -f data/synth/Test/UCSDsynth.m || $(BIN)/pipeline synth data/synth --seed 0
	$(BIN)/pipeline precompute synth --data data/synth --store stores/synth.zarr --preset $(PRESET) $(if $(WORKERS),--workers $(WORKERS))
	$(BIN)/vad store info stores/synth.zarr

bench: install
	$(BIN)/python benchmarks/bench_pipeline.py

bench-teachers: install
	$(BIN)/python benchmarks/bench_teachers.py --store $(STORE)

clean:
	rm -rf stores data/synth .pytest_cache
