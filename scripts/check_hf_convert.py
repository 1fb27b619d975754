"""llama.cpp's own convert_hf_to_gguf.py on a `chatapp export --format hf` folder,
then the GGUF it writes against our tokenizer and engine (a report, not a test):

    python scripts/check_hf_convert.py LLAMA_CPP_SOURCE HF_DIR MODEL_FOLDER

LLAMA_CPP_SOURCE is the vendor/llama.cpp of the llama-cpp-python sdist (README,
"Bring your own GGUF"). The converter names a BPE pre-tokenizer by hashing how
known models tokenize a test text; our vocabulary is not among them, so it is
told "gpt-2" (our split regex is GPT-2's). Everything else is the converter's own.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def convert(llama_source: Path, hf_dir: Path, out: Path) -> None:
    code = (
        f"import runpy, sys\nsys.path[:0] = [{str(llama_source)!r}, {str(llama_source / 'gguf-py')!r}]\n"
        "import conversion.base as base\n"
        "base.TextModel.get_vocab_base_pre = lambda self, tokenizer: 'gpt-2'\n"
        f"sys.argv = ['convert_hf_to_gguf.py', {str(hf_dir)!r}, '--outfile', {str(out)!r}, '--outtype', 'f32']\n"
        f"runpy.run_path({str(llama_source / 'convert_hf_to_gguf.py')!r}, run_name='__main__')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def main() -> None:
    llama_source, hf_dir, model_folder = (Path(a) for a in sys.argv[1:4])
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from test_quant_tokenizer import sample_strings

    from model.inference.sampling import SamplingParams
    from model.network.model_folder import load_tokenizer
    from model.text.chat_format import Message, render_ids
    from quant.llama_engine import LlamaEngine

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "converted.gguf"
        convert(llama_source, hf_dir, out)
        engine = LlamaEngine.load(out)
        ours = load_tokenizer(model_folder)
        strings = sample_strings()
        equal = sum(engine.prompt_format.vocab.encode(s) == ours.encode(s) for s in strings)
        print(f"tokenization: {equal}/{len(strings)} strings give our ids")
        messages = [
            Message("system", "You are Hamlet."),
            Message("user", "Good morrow"),
            Message("assistant", "Hail."),
            Message("user", "What news?"),
        ]
        chat_ids, expected = engine.fit(messages, 64).ids, render_ids(messages, ours)
        print(
            "chat prompt: "
            f"{'our ids' if chat_ids == expected else f'our ids after {chat_ids[: len(chat_ids) - len(expected)]}'}"
        )
        print(f"plain prompt: {engine.prompt_ids('Good morrow') == [ours.end_of_text_id] + ours.encode('Good morrow')}")
        greedy = SamplingParams(temperature=0, max_tokens=24)
        theirs = "".join(e.text for e in engine.complete("Good morrow, my lord", greedy) if hasattr(e, "text"))
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "chatapp",
                "run",
                "--model",
                str(model_folder),
                "--raw",
                "--temperature",
                "0",
                "--max-tokens",
                "24",
                "Good morrow, my lord",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        print(f"greedy continuation equals `chatapp run --raw`: {theirs == run.stdout[:-1]}")
        engine.close()


if __name__ == "__main__":
    main()
