# Two commands: `make chat` (set up the light install, no PyTorch, then chat with the built-in model)
# and `make test` (set up everything, PyTorch included, then run the whole test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A portable llama.cpp build (runs on any x86-64 with AVX2), without the multimodal library.
export CMAKE_ARGS ?= -DGGML_NATIVE=off -DLLAVA_BUILD=off
TORCH_VERSION := 2.13.0
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu

.PHONY: setup setup-light chat test test-light lint test-oldest-python bundle clean

setup: $(VENV)/.installed
setup-light: $(VENV)/.installed-light

# the light install (`pip install chatapp`): the chat app on llama.cpp, no torch
$(VENV)/.installed-light: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

# everything: torch first, then chatapp with its torch extra and the tests' packages. Which torch:
# Linux without an NVIDIA GPU gets the CPU build from PyTorch's CPU index (PyPI's Linux torch is
# the CUDA build, GBs with its nvidia packages); with a GPU, or off Linux, PyPI's default build.
# Where the CPU index cannot be reached (checked in seconds), the pin from the configured index:
# on machines that provide a local CPU wheel (pip's find-links), that one.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@if [ "$$(uname -s)" != Linux ] || nvidia-smi -L >/dev/null 2>&1; then \
		echo "torch $(TORCH_VERSION): the default build (an NVIDIA GPU, or not Linux)"; \
		$(BIN)/pip install --quiet torch==$(TORCH_VERSION); \
	elif $(BIN)/python -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5)" 2>/dev/null; then \
		echo "torch $(TORCH_VERSION): the CPU build, from $(TORCH_CPU_INDEX)"; \
		$(BIN)/pip install --quiet torch==$(TORCH_VERSION) --index-url $(TORCH_CPU_INDEX); \
	else \
		echo "torch $(TORCH_VERSION): $(TORCH_CPU_INDEX) is unreachable; taking the pin from pip's configured index"; \
		$(BIN)/pip install --quiet torch==$(TORCH_VERSION); \
	fi
	$(BIN)/pip install --quiet -e '.[torch,test]'
	touch $@ $(VENV)/.installed-light

chat: setup-light
	$(BIN)/chatapp

test: setup
	# the TUI smoke test drives the real app in tmux (Debian's package)
	command -v tmux >/dev/null || (apt-get update -qq && apt-get install -y -qq tmux)
	# the packaging tests validate the desktop entry with desktop-file-validate
	command -v desktop-file-validate >/dev/null || (apt-get update -qq && apt-get install -y -qq desktop-file-utils)
	$(BIN)/python -m pytest -q

# The light install as a user gets it: chatapp's wheel, built from this tree, in a fresh venv without
# torch (packaging/light_install.py, into build/light-venv), and the tests that drive its commands.
test-light: setup
	rm -rf build/light-venv
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/system/test_light_install.py

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
