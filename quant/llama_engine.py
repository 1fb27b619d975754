"""The llama.cpp engine: the engine core (model/inference/engine_core.py) running a GGUF file
through llama-cpp-python. No torch.

llama.cpp evaluates the tokens; the core draws each next token (one sampler for
both engines), so a cancel() stops within one token and every sampling field
means the same as on torch. For our own models (the GGUF has chatapp's keys)
prompts come from our chat format with our tokenizer rebuilt from the file.
Any other GGUF (Llama, Qwen, Gemma, ...) is prompted through its own chat
template (model/text/chat_template.py: message text never becomes a control token)
and stops on its end-of-generation tokens.

This runs in the process that loads it: the app runs it in a worker process
(quant/llama_worker.py), where a native abort cannot take the app down.
Prompt + reply never pass context_length: a position beyond it makes llama.cpp
abort.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.text.chat_format import ChatappFormat
from model.text.chat_template import TemplateFormat
from model.inference.engine_core import EngineCore
from quant.gguf_check import GGUFInfo, chatapp_tokenizer, check_gguf, read_gguf
from quant.llama_load import FOREIGN_MAX_CONTEXT, context_for, load_llama

if TYPE_CHECKING:
    from llama_cpp import Llama

SPECIAL_ATTRIBUTES = ("LLAMA_TOKEN_ATTR_CONTROL", "LLAMA_TOKEN_ATTR_USER_DEFINED", "LLAMA_TOKEN_ATTR_UNKNOWN")


class LlamaVocab:
    """A foreign GGUF's tokenizer, through llama.cpp (what model.text.chat_template needs)."""

    def __init__(self, llm: Llama) -> None:
        import llama_cpp

        self.llm = llm
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.vocab_size = llm.n_vocab()
        self.bos_id = llm.token_bos()
        self.eos_id = llm.token_eos()
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab)) and self.bos_id >= 0
        self._buffer = ctypes.create_string_buffer(256)
        special_mask = 0
        for attribute in SPECIAL_ATTRIBUTES:
            special_mask |= int(getattr(llama_cpp, attribute))
        user_defined = int(llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED)
        self.control_tokens: dict[str, int] = {}
        self._always_parsed: list[str] = []  # user-defined tokens: llama.cpp matches them even in plain text
        for token_id in range(self.vocab_size):
            attributes = int(llama_cpp.llama_vocab_get_attr(self.vocab, token_id))
            if attributes & special_mask:
                text = self.token_text(token_id)
                if text:
                    self.control_tokens.setdefault(text, token_id)
                    if attributes & user_defined:
                        self._always_parsed.append(text)
        self._always_parsed.sort(key=len, reverse=True)
        self.eog_ids = {i for i in self.control_tokens.values() if llama_cpp.llama_vocab_is_eog(self.vocab, i)}
        self.eog_ids |= {i for i in (self.eos_id, llama_cpp.llama_vocab_eot(self.vocab)) if i >= 0}

    def token_text(self, token_id: int) -> str:
        import llama_cpp

        return llama_cpp.llama_vocab_get_text(self.vocab, token_id).decode("utf-8", errors="replace")

    def encode(self, text: str) -> list[int]:
        """Plain text: no special-token parsing and no BOS. A user-defined token's text (which
        llama.cpp would match even here) is split in two, so it stays plain text."""
        ids: list[int] = []
        for part, is_token_text in self._split_always_parsed(text):
            if is_token_text:
                half = len(part) // 2
                ids += self._tokenize(part[:half]) + self._tokenize(part[half:])
            else:
                ids += self._tokenize(part)
        return ids

    def _tokenize(self, text: str) -> list[int]:
        if not text:
            return []
        return self.llm.tokenize(text.encode("utf-8", errors="replace"), add_bos=False, special=False)

    def _split_always_parsed(self, text: str):
        if not self._always_parsed or not any(t in text for t in self._always_parsed):
            return [(text, False)]
        parts, at = [], 0
        while at < len(text):
            found = min(((text.find(t, at), -len(t), t) for t in self._always_parsed if text.find(t, at) >= 0), default=None)
            if found is None:
                break
            start, _, token_text = found
            parts += [(text[at:start], False), (token_text, True)]
            at = start + len(token_text)
        return parts + [(text[at:], False)]

    def token_bytes(self, token_id: int) -> bytes:
        import llama_cpp

        n = llama_cpp.llama_token_to_piece(self.vocab, token_id, self._buffer, len(self._buffer), 0, False)
        if n < 0:  # longer than the buffer
            self._buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token_id, self._buffer, len(self._buffer), 0, False)
        return self._buffer.raw[: max(n, 0)]


class LlamaEngine(EngineCore):
    name = "llama.cpp"

    def __init__(self, llm, info: GGUFInfo, prompt_format, context_length: int, log_path: Path | None = None):
        super().__init__(prompt_format, context_length, info.name, info.context_length)
        self.llm = llm
        self.info = info
        self.path = info.path
        self.log_path = log_path
        self.ours = info.chatapp
        self.n_vocab = llm.n_vocab()

    @classmethod
    def load(cls, path: str | Path, *, n_threads: int | None = None, n_gpu_layers: int | None = None,
             max_context: int = FOREIGN_MAX_CONTEXT, log_dir: str | Path | None = None,
             bounded_template_memory: bool = False) -> "LlamaEngine":
        """Check the file, then load it; a bad file raises GGUFFileError (one line)."""
        path = Path(path).expanduser()
        reader = read_gguf(path)
        info = check_gguf(path, reader)
        tokenizer = chatapp_tokenizer(path, reader) if info.chatapp else None
        del reader  # its memory map is not needed once llama.cpp has the file
        context = context_for(info, max_context)
        llm, log_path = load_llama(info, context, purpose="the llama.cpp backend", n_threads=n_threads,
                                   n_gpu_layers=n_gpu_layers, log_dir=log_dir)
        prompt_format: ChatappFormat | TemplateFormat
        if tokenizer is not None:
            prompt_format = ChatappFormat(tokenizer)
        else:
            vocab = LlamaVocab(llm)
            prompt_format = TemplateFormat(vocab, info.chat_template, vocab.eog_ids, bounded_memory=bounded_template_memory,
                                           source=str(path))
        return cls(llm, info, prompt_format, context, log_path)

    @property
    def tokenizer(self):
        """Our Tokenizer for our own files; llama.cpp's vocabulary for foreign ones."""
        return getattr(self.prompt_format, "tokenizer", None) or self.prompt_format.vocab

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()

    def reset_cache(self) -> None:
        super().reset_cache()
        self.llm.reset()

    def evaluate(self, start: int, ids: list[int]) -> np.ndarray:
        import llama_cpp

        if start + len(ids) > self.context_length:  # llama.cpp would abort the process
            raise RuntimeError(f"internal error: position {start + len(ids)} past the context of {self.context_length}")
        self.llm.n_tokens = start
        self.llm.eval(ids)
        pointer = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()
