"""What runs without torch, checked at run time: the torch-free face of model
and the llama.cpp path import no torch, and the command line starts without
numpy, torch, llama.cpp or textual. (Who may import whom at all is
import-linter's job: tests/structure/test_layering.py.)"""

import subprocess
import sys

from tests.helpers.paths import ROOT  # noqa: E402


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_torch_free_face_and_llama_path_import_no_torch():
    code = (
        "import sys\n"
        "import model.text.tokenizer, model.text.chat_format, model.inference.sampling, model.inference.backend, "
        "model.inference.reply_stream\n"
        "import model.training.corpus, model.training.dialogue, model.training.presets\n"
        "import quant.llama_engine, quant.llama_load, quant.llama_worker, quant.gguf_export, quant.quantize, "
        "quant.gguf_validation_loss, quant.llama_slots, quant.slot_engine\n"
        "import chatapp.cli, chatapp.commands, chatapp.models.opening, chatapp.models.registry, chatapp.settings\n"
        "import chatapp.serving.parallel, chatapp.serving.server\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def test_the_command_line_starts_light():
    """`chatapp --version` and building the parser import no numpy (SamplingParams's defaults
    are read when help is shown), no torch, no llama.cpp, no textual."""
    code = (
        "import sys\n"
        "from chatapp.cli import build_parser, main\n"
        "build_parser()\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted({'numpy', 'torch', 'llama_cpp', 'textual', 'gguf'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def test_chatapp_models_imports_no_torch():
    code = (
        "import sys, contextlib, io\n"
        "from chatapp.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['models', '--json']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'llama_cpp' not in sys.modules, 'llama_cpp was imported'\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
