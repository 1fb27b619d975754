"""A model folder for Ollama: the GGUF file and a Modelfile beside it.

    FROM ./NAME.gguf
    TEMPLATE ...        our chat format in Ollama's Go template syntax
    PARAMETER stop      <|end|> and <|endoftext|>
    PARAMETER num_ctx   the model's context; temperature and top_p: our defaults

Ollama reads the file's own Jinja `tokenizer.chat_template` only for models
it knows, so the Modelfile spells the format out. Then `ollama create NAME -f
DIR/Modelfile` and `ollama run NAME`. Ollama is not installable here: the
tests render this template with a Go-template subset and compare it with our
chat format on many conversations; nothing here has been run in Ollama.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from model.inference.sampling import SamplingParams
from model.network.model_folder import read_config
from model.text.chat_format import ROLE_MARKERS
from model.text.tokenizer import ASSISTANT, END_OF_TEXT, END_OF_TURN

MODELFILE = "Modelfile"


def go_template() -> str:
    """Our chat format (model/text/chat_format.py) for Ollama: every message, then the assistant's marker."""
    branches = "".join(
        f'{{{{- {"if" if index == 0 else "else if"} eq .Role "{role}" }}}}{marker}{{{{ .Content }}}}{END_OF_TURN}'
        for index, (role, marker) in enumerate(ROLE_MARKERS.items())
    )
    return f"{{{{- range .Messages }}}}{branches}{{{{- end }}}}{{{{- end }}}}{ASSISTANT}"


def modelfile(gguf_name: str, context_length: int) -> str:
    defaults = SamplingParams()
    return "\n".join(
        [
            f"FROM ./{gguf_name}",
            f'TEMPLATE """{go_template()}"""',
            f'PARAMETER stop "{END_OF_TURN}"',
            f'PARAMETER stop "{END_OF_TEXT}"',
            f"PARAMETER num_ctx {context_length}",
            f"PARAMETER temperature {defaults.temperature}",
            f"PARAMETER top_p {defaults.top_p}",
            "",
        ]
    )


def is_ollama_export(out: Path) -> bool:
    """An empty folder, or one an earlier export wrote (it has a Modelfile)."""
    return out.is_dir() and ((out / MODELFILE).is_file() or not any(out.iterdir()))


def write_modelfile(model_folder: str | Path, out_dir: str | Path, gguf_name: str) -> Path:
    """DIR/Modelfile for the GGUF file DIR/gguf_name (written atomically)."""
    out = Path(out_dir)
    context = read_config(model_folder)["architecture"]["context_length"]
    fd, temporary = tempfile.mkstemp(prefix=f".{MODELFILE}.", dir=out)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(modelfile(gguf_name, context))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, out / MODELFILE)
    return out / MODELFILE
