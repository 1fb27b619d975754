# Two commands: `make chat` (set up, then chat with the built-in model) and
# `make test` (set up, then run the whole test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A portable llama.cpp build (runs on any x86-64 with AVX2), without the multimodal library.
export CMAKE_ARGS ?= -DGGML_NATIVE=off -DLLAVA_BUILD=off

.PHONY: setup chat test lint test-oldest-python bundle clean

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

# the formatter, the linter and the type checker, configured in pyproject.toml
lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

# Python 3.10, the oldest chatapp supports, on the torch-free modules (settings with tomli, chat
# formats and templates, sampling, the tokenizer): no torch for 3.10 lies on this machine.
PYTHON_OLDEST ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python /usr/bin/python3.10))
OLDEST_TESTS := tests/model/test_chat_template_sandbox.py tests/model/test_sampling.py tests/model/test_chat_format.py tests/model/test_streaming.py \
	tests/chatapp/test_settings_file.py tests/model/test_tokenizer.py tests/chatapp/history/test_store.py
test-oldest-python:
	@if [ -z "$(PYTHON_OLDEST)" ]; then echo "no Python 3.10 here: the oldest-Python check did not run"; exit 0; fi; \
	test -x .venv310/bin/pytest || ($(PYTHON_OLDEST) -m venv .venv310 && .venv310/bin/pip install --quiet \
		numpy tiktoken regex platformdirs jinja2 'tomli>=2' textual pytest pytest-asyncio hypothesis) && \
	.venv310/bin/python -m pytest -q -p no:cacheprovider $(OLDEST_TESTS)

# the torch-free desktop bundle (packaging/README.md)
bundle:
	$(PYTHON) packaging/build.py

clean:
	rm -rf $(VENV) .venv310 build dist *.egg-info
