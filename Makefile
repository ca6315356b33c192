# Two entry points (see README): `make demo` and `make test`. Both create the virtualenv if needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Extras: test (pytest), s3 (s3fs for s3:// stores, moto's local S3 server that the tests use) and
# tensorboard (metrics as TensorBoard event files) and hf (transformers: students of other architectures).
# The CPU build of torch; on a CUDA machine set TORCH_SPEC=torch (or preinstall torch in the venv).
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test bench corpus clean

$(BIN)/pipeline: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test,s3,tensorboard,hf]"
	touch $(BIN)/pipeline

setup: $(BIN)/pipeline

data/corpora/shakespeare: | setup
	$(BIN)/python data/shakespeare.py --out data/corpora/shakespeare

corpus: data/corpora/shakespeare

demo: setup data/corpora/shakespeare
	$(BIN)/pipeline experiment demo --out runs/demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf runs build *.egg-info
