# Two commands: `make chat` (set up, then chat with the built-in model) and
# `make test` (set up, then run the whole test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A portable llama.cpp build (runs on any x86-64 with AVX2), without the multimodal library.
export CMAKE_ARGS ?= -DGGML_NATIVE=off -DLLAVA_BUILD=off

.PHONY: setup chat test bundle clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel here (a looser "torch" would pull a CUDA build of several GB)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

chat: setup
	$(BIN)/chatapp

test: setup
	# the TUI smoke test drives the real app in tmux (Debian's package)
	command -v tmux >/dev/null || (apt-get update -qq && apt-get install -y -qq tmux)
	# the packaging tests validate the desktop entry with desktop-file-validate
	command -v desktop-file-validate >/dev/null || (apt-get update -qq && apt-get install -y -qq desktop-file-utils)
	$(BIN)/python -m pytest -q

# the torch-free desktop bundle (packaging/README.md)
bundle:
	$(PYTHON) packaging/build.py

clean:
	rm -rf $(VENV) build dist *.egg-info
