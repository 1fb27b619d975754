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

from model.inference.engine_core import EngineCore
from model.inference.reply_stream import common_prefix_length
from model.text.chat_format import ChatappFormat
from quant.gguf_check import GGUFInfo, chatapp_tokenizer, check_gguf, read_header
from quant.gguf_header import GGUFHeader, read_gguf_header
from quant.kv_cache import DEFAULT_DISK_BYTES, DEFAULT_MEMORY_BYTES, ModelIdentity, StateCache
from quant.llama_load import FOREIGN_MAX_CONTEXT, BackgroundLoad
from quant.llama_tokens import tokenize

if TYPE_CHECKING:
    from model.text.chat_template import TemplateFormat
    from quant.llama_native import LoadedLlama

RECENT_REPLIES = 16  # replies whose sampled ids are kept (as in the torch engine): the conversations in the cache
SPECIAL_ATTRIBUTES = ("LLAMA_TOKEN_ATTR_CONTROL", "LLAMA_TOKEN_ATTR_USER_DEFINED", "LLAMA_TOKEN_ATTR_UNKNOWN")


# Token types (gguf's TokenType) whose tokens may carry a special attribute in llama.cpp:
# UNDEFINED, UNKNOWN, CONTROL, USER_DEFINED. NORMAL, UNUSED and BYTE tokens get one only from
# llama.cpp's own fix-ups, by text (an end-of-turn or fill-in-the-middle marker typed NORMAL).
SPECIAL_TOKEN_TYPES = (0, 2, 3, 4)
# The texts llama.cpp recognises as end-of-generation or fill-in-the-middle markers (llama-vocab.cpp),
# and a few more: whichever of them llama.cpp parses as one special token is a candidate.
MARKER_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>",
    "<｜end▁of▁sentence｜>", "<|end▁of▁sentence|>", "<|end_of_text|>", "<|return|>", "<|call|>", "<|calls|>",
    "<|flush|>", "<|fim_prefix|>", "<fim-prefix>", "<｜fim▁begin｜>", "<fim_prefix>", "<|fim_suffix|>",
    "<fim-suffix>", "<｜fim▁hole｜>", "<fim_suffix>", "<|fim_middle|>", "<fim-middle>", "<｜fim▁end｜>",
    "<fim_middle>", "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
    "<reponame>", "<|file_sep|>", "<fim-sep>", "<file_sep>", "<|endofprompt|>",
)  # fmt: skip
SPECIAL_ID_GETTERS = (
    "llama_vocab_bos", "llama_vocab_eos", "llama_vocab_eot", "llama_vocab_sep", "llama_vocab_nl", "llama_vocab_pad",
    "llama_vocab_fim_pre", "llama_vocab_fim_suf", "llama_vocab_fim_mid", "llama_vocab_fim_pad",
    "llama_vocab_fim_rep", "llama_vocab_fim_sep",
)  # fmt: skip


def special_candidates(info: GGUFInfo, llm: LoadedLlama) -> list[int] | None:
    """The ids that may be special tokens, from the file's token types (read as one array, not
    token by token), llama.cpp's own special ids and markers: a few hundred of 262,144, so that
    LlamaVocab asks llama.cpp about those alone. None when the file has no usable token types."""
    import llama_cpp

    if info.token_types_at is None:
        return None
    start, count, dtype = info.token_types_at
    n_vocab = llm.n_vocab()
    if count != n_vocab:
        return None
    with open(info.path, "rb") as file:
        file.seek(start)
        data = file.read(count * 4)
    if len(data) != count * 4:
        return None
    types = np.frombuffer(data, dtype=dtype)
    found = set(np.flatnonzero(np.isin(types, SPECIAL_TOKEN_TYPES)).tolist())
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    for getter in SPECIAL_ID_GETTERS:
        function = getattr(llama_cpp, getter, None)
        if function is not None:
            found.add(int(function(vocab)))
    for text in MARKER_TEXTS:
        ids = tokenize(vocab, text.encode("utf-8"), parse_special=True)
        if len(ids) == 1:
            found.add(ids[0])
    return sorted(i for i in found if 0 <= i < n_vocab)


class LlamaVocab:
    """A foreign GGUF's tokenizer, through llama.cpp (what model.text.chat_template needs)."""

    def __init__(self, llm: LoadedLlama, candidates: list[int] | None = None) -> None:
        """`candidates`: the only ids that may be special (special_candidates); None asks llama.cpp
        about every token (a quarter of a second for a 262,144-token vocabulary)."""
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
        for token_id in range(self.vocab_size) if candidates is None else candidates:
            attributes = int(llama_cpp.llama_vocab_get_attr(self.vocab, token_id))
            if attributes & special_mask:
                text = self.token_text(token_id)
                if text:
                    self.control_tokens.setdefault(text, token_id)
                    if attributes & user_defined:
                        self._always_parsed.append(text)
        self._always_parsed.sort(key=len, reverse=True)
        self._always_parsed_by_first: dict[str, list[str]] | None = None  # built on the first encode
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
        return tokenize(self.vocab, text.encode("utf-8", errors="replace"))

    def _split_always_parsed(self, text: str) -> list[tuple[str, bool]]:
        """`text` cut at each user-defined token's text, leftmost first and the longest there: one pass
        over the text (a paste of thousands of lines was quadratic: a find per token per match)."""
        if self._always_parsed_by_first is None:
            self._always_parsed_by_first = {}
            for token_text in self._always_parsed:  # longest first, so each list is too
                self._always_parsed_by_first.setdefault(token_text[0], []).append(token_text)
        by_first = self._always_parsed_by_first
        parts: list[tuple[str, bool]] = []
        at = scan = 0
        while scan < len(text):
            candidates = by_first.get(text[scan], ())
            match = next((t for t in candidates if text.startswith(t, scan)), None)
            if match is None:
                scan += 1
                continue
            parts += [(text[at:scan], False), (match, True)]
            at = scan = scan + len(match)
        return parts + [(text[at:], False)] if parts else [(text, False)]

    def token_bytes(self, token_id: int) -> bytes:
        import llama_cpp

        n = llama_cpp.llama_token_to_piece(self.vocab, token_id, self._buffer, len(self._buffer), 0, False)
        if n < 0:  # longer than the buffer
            self._buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token_id, self._buffer, len(self._buffer), 0, False)
        return self._buffer.raw[: max(n, 0)]


def _vocabulary_header(path: Path):
    """The header of a file the caller checked, read again for its vocabulary without the checks (nor
    gguf-py's constants they import); a file changed since then is checked again, for its one-line error."""
    try:
        return read_gguf_header(path)
    except Exception:  # noqa: BLE001 - read_header says what is wrong, in one line
        return read_header(path)


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
        self.threads = (int(llm.n_threads), int(llm.n_threads_batch))  # (decode, prompt), as `chatapp bench` shows
        self.state_cache: StateCache | None = None  # saved KV states of recent prompts (quant/kv_cache.py)
        self.state_cache_dir: Path | None = None  # where they are kept on disk
        self.recent_replies: dict[str, list[int]] = {}  # the last few replies' texts -> their sampled ids
        self._cold = False  # reset_cache: the next prefill computes everything

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        n_gpu_layers: int | None = None,
        max_context: int = FOREIGN_MAX_CONTEXT,
        log_dir: str | Path | None = None,
        bounded_template_memory: bool = False,
        info: GGUFInfo | None = None,
        state_cache_dir: str | Path | None = None,
        state_cache_mb: int = DEFAULT_MEMORY_BYTES // 2**20,
        state_disk_mb: int = DEFAULT_DISK_BYTES // 2**20,
        loading: BackgroundLoad | None = None,
    ) -> LlamaEngine:
        """Check the file, then load it; a bad file raises GGUFFileError (one line). With `info`,
        check_gguf's answer for this file from the caller (the worker's app), it is not checked again.
        Recent prompts' KV states are kept in state_cache_mb of memory and, with state_cache_dir,
        in state_disk_mb on disk (quant/kv_cache.py); each limit at 0 keeps none there.
        `loading`: llama.cpp's load of this file, already started by the caller with these very
        options (the worker); otherwise it starts here, and runs while our tokenizer is built."""
        path = Path(path).expanduser()
        header: GGUFHeader | None
        if info is None:
            header = read_header(path)
            info = check_gguf(path, header)
        else:  # checked by the caller: only our own files' vocabulary is read again, without the checks
            header = _vocabulary_header(path) if info.chatapp else None
        if loading is None:
            loading = BackgroundLoad(
                info,
                max_context=max_context,
                n_threads=n_threads,
                n_threads_batch=n_threads_batch,
                n_gpu_layers=n_gpu_layers,
                log_dir=log_dir,
            )
        tokenizer = chatapp_tokenizer(path, header) if info.chatapp else None
        context = loading.context
        llm, log_path = loading.result()
        prompt_format: ChatappFormat | TemplateFormat
        if tokenizer is not None:
            prompt_format = ChatappFormat(tokenizer)
        else:
            from model.text.chat_template import TemplateFormat  # foreign files only: our own use our format

            vocab = LlamaVocab(llm, special_candidates(info, llm))
            prompt_format = TemplateFormat(
                vocab, info.chat_template, vocab.eog_ids, bounded_memory=bounded_template_memory, source=str(path)
            )
        engine = cls(llm, info, prompt_format, context, log_path)
        engine.state_cache_dir = Path(state_cache_dir) if state_cache_dir is not None else None
        engine.set_cache_limits(state_cache_mb, state_disk_mb)
        return engine

    def set_cache_limits(self, memory_mb: int, disk_mb: int) -> None:
        """How much the saved states may take: memory_mb in memory, disk_mb on disk (with a state_cache_dir);
        0 keeps none there. What is kept beyond a lowered limit goes, least recently used first."""
        if self.state_cache is not None:
            self.state_cache.resize(memory_mb * 2**20, disk_mb * 2**20)
        elif memory_mb > 0 or (self.state_cache_dir is not None and disk_mb > 0):
            identity = ModelIdentity.of(self.path, self.context_length)
            self.state_cache = StateCache(identity, self.state_cache_dir, memory_mb * 2**20, disk_mb * 2**20)

    @property
    def tokenizer(self):
        """Our Tokenizer for our own files; llama.cpp's vocabulary for foreign ones."""
        return getattr(self.prompt_format, "tokenizer", None) or self.prompt_format.vocab

    def close(self) -> None:
        if self.state_cache is not None:
            self.state_cache.flush()  # the last reply's state reaches the disk
        llm, self.llm = self.llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()

    def reset_cache(self) -> None:
        super().reset_cache()
        self.llm.reset()
        self.recent_replies = {}
        self._cold = True

    # --- saved states: a prompt computed once ---

    def _prefill(self, prompt: list[int]) -> np.ndarray:
        """The core's, after restoring the saved state that shares the longest prefix with `prompt`,
        when it shares more than the context holds now."""
        cold, self._cold = self._cold, False
        if self.state_cache is not None and not cold:
            held = common_prefix_length(self.cached_ids, prompt)
            found = self.state_cache.best(prompt[:-1], better_than=held)  # one token must run to give logits
            if found is not None:
                ids, state = found
                self.cached_ids = list(ids) if self._restore(state) else []
        return super()._prefill(prompt)

    def _restore(self, state: bytes) -> bool:
        import llama_cpp

        self.llm.forget(0)
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama_cpp.llama_state_seq_set_data(self.llm.ctx, buffer, len(state), 0) == 0:
            self.llm.forget(0)  # a state llama.cpp refuses: compute everything
            return False
        return True

    def save_state(self) -> None:
        """Keep the context's state (its ids: the last prompt and reply) for a later prefill."""
        import llama_cpp

        if self.state_cache is None or not self.cached_ids:
            return
        size = llama_cpp.llama_state_seq_get_size(self.llm.ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self.llm.ctx, buffer, size, 0)
        if written:
            self.state_cache.put(self.cached_ids, bytes(buffer)[:written])

    def _generate(self, *args, **kwargs):
        yield from super()._generate(*args, **kwargs)
        self._remember_recent_replies()
        self.save_state()

    def _remember_recent_replies(self) -> None:
        """A conversation come back to sends its last reply as the ids it was sampled as (which may differ
        from the text tokenized again), as its saved state holds them: the core remembers the last reply
        only, so the last RECENT_REPLIES are kept here."""
        recent = {text: ids for text, ids in self.recent_replies.items() if text not in self.known_replies}
        self.recent_replies = dict(list({**recent, **self.known_replies}.items())[-RECENT_REPLIES:])
        self.known_replies = dict(self.recent_replies)

    def evaluate(self, start: int, ids: list[int]) -> np.ndarray:
        import llama_cpp

        if start + len(ids) > self.context_length:  # llama.cpp would abort the process
            raise RuntimeError(f"internal error: position {start + len(ids)} past the context of {self.context_length}")
        self.llm.n_tokens = start
        self.llm.eval(ids)
        pointer = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()
