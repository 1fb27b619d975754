"""The arrows of ARCHITECTURE.md: model and quant never import chatapp; the
torch-free face of model and the llama.cpp path never import torch."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(package: str) -> set[str]:
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_model_and_quant_never_import_chatapp():
    assert "chatapp" not in imported_modules("model")
    assert "chatapp" not in imported_modules("quant")
    assert "textual" not in imported_modules("model") | imported_modules("quant")


def test_torch_free_face_and_llama_path_import_no_torch():
    code = (
        "import sys\n"
        "import model.text.tokenizer, model.text.chat_format, model.inference.sampling, model.inference.backend, model.inference.reply_stream, model.training.corpus\n"
        "import quant.llama_backend, quant.gguf_export, quant.gguf_validation_loss\n"
        "import chatapp.cli, chatapp.commands, chatapp.backends, chatapp.model_registry\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
