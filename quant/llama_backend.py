"""The llama.cpp engine behind the backend protocol (model/backend.py).

Mirrors model.engine.TorchEngine: `chat`, `complete`, `generate_ids`,
`reset_cache`, `cancel`, `load`, and the attributes `name`, `model_name`,
`context_length`, `tokenizer`. llama.cpp evaluates the tokens; the next token
is drawn here (quant/sample.py) with the same rules as the torch engine, one
token at a time, so a cancel() from another thread stops within one token.

For our own models (the GGUF has chatapp's keys) the prompt ids come from
model.chat_format with our tokenizer rebuilt from the file, so user text can
never become a control token, and generation stops on the <|end|> id. Any
other GGUF (Llama, Qwen, ...) is prompted through the file's own Jinja chat
template, as llama-cpp-python's create_chat_completion would, and stops on its
end-of-generation tokens.

Prompt + reply never pass context_length: a position beyond the model's
learned context makes llama.cpp abort the whole process. Shared prompt
prefixes are not evaluated again (multi-turn chat only computes the new turn).
"""

from __future__ import annotations

import ctypes
import random
from pathlib import Path
from typing import Iterator

import numpy as np

from model.backend import CancelFlag, Event
from model.chat_format import Message, fit_to_context
from model.sampling import SamplingParams
from model.threads import default_threads
from model.reply_stream import ReplyStream, common_prefix_length
from quant.gguf_check import GGUFFileError, GGUFInfo, chatapp_tokenizer, check_gguf, read_gguf
from quant.sample import sample_next

REPETITION_WINDOW = 64  # as the torch engine
FOREIGN_MAX_CONTEXT = 4096  # a foreign model's KV cache is sized for at most this many tokens by default
PLAIN_TEMPLATE = (  # for a foreign file without a chat template
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


class VocabTokenizer:
    """The tokenizer of a foreign GGUF, through llama.cpp (the subset the app uses)."""

    def __init__(self, llm):
        import llama_cpp

        self.llm = llm
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.vocab_size = llm.n_vocab()
        self.end_of_text_id = llm.token_eos()
        self.bos_id = llm.token_bos()
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab)) and self.bos_id >= 0
        self._buffer = ctypes.create_string_buffer(1024)

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8", errors="replace"), add_bos=False, special=False)

    def token_bytes(self, token_id: int) -> bytes:
        import llama_cpp

        n = llama_cpp.llama_token_to_piece(self.vocab, token_id, self._buffer, len(self._buffer), 0, False)
        if n < 0:  # longer than the buffer
            self._buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token_id, self._buffer, len(self._buffer), 0, False)
        return self._buffer.raw[: max(n, 0)]

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self.token_bytes(i) for i in ids)

    def decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def is_end_of_generation(self, token_id: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token_id))


class LlamaBackend:
    name = "llama.cpp"

    def __init__(self, llm, info: GGUFInfo, tokenizer, context_length: int, log_path: Path | None = None):
        self.llm = llm
        self.info = info
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.log_path = log_path
        self.model_name = info.name
        self.path = info.path
        self.ours = info.chatapp
        self.cancel_flag = CancelFlag()
        self.cached_ids: list[int] = []  # the tokens whose keys/values are in llama.cpp's cache
        self.prefilled_tokens = 0
        self.n_vocab = llm.n_vocab()
        self._formatter = None

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
        max_context: int = FOREIGN_MAX_CONTEXT,
        log_dir: str | Path | None = None,
    ) -> "LlamaBackend":
        """Check the file, then load it; a bad file raises GGUFFileError (one line)."""
        path = Path(path).expanduser()
        reader = read_gguf(path)
        info = check_gguf(path, reader)
        tokenizer = chatapp_tokenizer(path, reader) if info.chatapp else None
        del reader  # its memory map is not needed once llama.cpp has the file
        try:
            import llama_cpp
        except ImportError as error:
            raise GGUFFileError(f"the llama.cpp backend needs llama-cpp-python, which this install lacks ({error})") from None
        from quant.llama_log import route_logs

        log_path = route_logs(log_dir)
        if info.chatapp:
            context = info.context_length
        else:
            context = min(info.context_length or max_context, max_context)
        decode_threads, batch_threads = default_threads(info.size_bytes)
        if n_gpu_layers is None:
            n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        try:
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=context,
                n_threads=n_threads or decode_threads,
                n_threads_batch=n_threads or batch_threads,
                n_gpu_layers=n_gpu_layers,
                logits_all=False,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as error:
            where = f" (details in {log_path})" if log_path else ""
            raise GGUFFileError(f"{path}: llama.cpp could not load it: {str(error).splitlines()[0] if str(error) else type(error).__name__}{where}") from None
        if tokenizer is None:
            tokenizer = VocabTokenizer(llm)
        return cls(llm, info, tokenizer, context, log_path)

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()

    def reset_cache(self) -> None:
        self.cached_ids = []
        self.llm.reset()

    def cancel(self) -> None:
        self.cancel_flag.set()

    def default_reserve(self, params: SamplingParams) -> int:
        return min(params.max_tokens, self.context_length // 2)

    # --- prompts ---

    def stop_ids(self, params: SamplingParams, chat: bool = True) -> set[int]:
        ids = set(params.stop_token_ids)
        if self.ours:
            ids.add(self.tokenizer.end_of_text_id)
            if chat:
                ids.add(self.tokenizer.end_of_turn_id)
        return ids

    def build_prompt(self, messages: list[Message], reserve: int):
        """(prompt ids, notices) for a conversation, leaving `reserve` tokens for the reply."""
        if self.ours:
            fitted = fit_to_context(messages, self.tokenizer, self.context_length, reserve)
            return fitted.ids, fitted.notices
        return self._foreign_prompt(messages, reserve)

    def _render(self, system: list[Message], turns: list[Message]) -> list[int]:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if self._formatter is None:
            vocab = llama_cpp.llama_model_get_vocab(self.llm.model)

            def text(token: int) -> str:
                return llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8", errors="replace") if token >= 0 else ""

            self._formatter = Jinja2ChatFormatter(
                template=self.info.chat_template or PLAIN_TEMPLATE,
                eos_token=text(self.llm.token_eos()),
                bos_token=text(self.llm.token_bos()),
            )
        try:
            rendered = self._formatter(messages=[{"role": m.role, "content": m.content} for m in system + turns]).prompt
        except Exception as error:  # jinja errors, and the template's own raise_exception
            raise ValueError(f"the model's chat template failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
        # as create_chat_completion does: the template writes the BOS text itself
        return self.llm.tokenize(rendered.encode("utf-8", errors="replace"), add_bos=False, special=True)

    def _cut_front(self, message: Message, over: int) -> Message:
        """The message without (about) its first `over` tokens."""
        content = self.tokenizer.encode(message.content)
        keep = max(len(content) - over - 2, 0)
        return Message(message.role, self.tokenizer.decode(content[len(content) - keep:]) if keep else "")

    def _foreign_prompt(self, messages: list[Message], reserve: int):
        """The file's chat template, fitted with the rules of model.chat_format.fit_to_context."""
        if reserve >= self.context_length:
            raise ValueError(f"reply reserve ({reserve}) must be smaller than the context length ({self.context_length})")
        budget = self.context_length - reserve
        notices = [] if self.info.chat_template else ["this model has no chat template: a plain 'role: text' format is used"]
        system = [m for m in messages if m.role == "system"][:1]
        turns = [m for m in messages if m.role != "system"]
        for attempt in range(8):  # a system prompt may not take over the context
            over = len(self._render(system, [])) - budget // 2
            if not system or over <= 0:
                break
            system = [self._cut_front(system[0], over)] if attempt < 7 else []
            if attempt == 0:
                notices.append("the system prompt was cut to fit the context")
        ids = self._render(system, turns)
        dropped = 0
        while len(ids) > budget and len(turns) > 1:
            turns = turns[1:]
            dropped += 1
            ids = self._render(system, turns)
        truncated = False
        for _ in range(8):  # the newest message alone is too long: keep its end
            if len(ids) <= budget or not turns or not turns[-1].content:
                break
            turns[-1] = self._cut_front(turns[-1], len(ids) - budget)
            truncated = True
            ids = self._render(system, turns)
        if len(ids) > budget:
            raise ValueError(f"the prompt does not fit the context of {self.context_length} tokens with {reserve} kept for the reply")
        if truncated:
            notices.append("the last message was too long for the context: its beginning was left out")
        if dropped:
            notices.append(f"{dropped} earlier message(s) no longer fit the context and were left out")
        return ids, notices

    def chat(self, messages: list[Message], params: SamplingParams, reserve: int | None = None) -> Iterator[Event]:
        params.validate()
        ids, notices = self.build_prompt(messages, reserve or self.default_reserve(params))
        return self.generate_ids(ids, params, self.stop_ids(params), notices)

    def complete(self, text: str, params: SamplingParams) -> Iterator[Event]:
        """Continue plain text (no chat format), as the base model was trained."""
        params.validate()
        if self.ours:
            ids = [self.tokenizer.end_of_text_id] + self.tokenizer.encode(text)
        else:
            ids = ([self.tokenizer.bos_id] if self.tokenizer.add_bos else []) + self.tokenizer.encode(text)
        budget = self.context_length - self.default_reserve(params)
        notices = []
        if len(ids) > budget:
            notices.append(f"the text was too long: its first {len(ids) - budget} tokens were left out")
            ids = ids[len(ids) - budget:]
        if not ids:
            ids = [self.tokenizer.end_of_text_id]
        return self.generate_ids(ids, params, self.stop_ids(params, chat=False), notices)

    # --- the loop ---

    def _logits(self) -> np.ndarray:
        import llama_cpp

        pointer = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def _evaluate(self, start: int, ids: list[int]) -> np.ndarray:
        """Evaluate ids at positions start.. (the cache keeps positions < start)."""
        if start + len(ids) > self.context_length:  # llama.cpp would abort the process
            raise RuntimeError(f"internal error: position {start + len(ids)} past the context of {self.context_length}")
        self.cached_ids = self.cached_ids[:start]
        self.llm.n_tokens = start
        self.llm.eval(ids)
        self.cached_ids += list(ids)
        return self._logits()

    def _prefill(self, prompt: list[int]) -> np.ndarray:
        reuse = common_prefix_length(self.cached_ids, prompt)
        reuse = min(reuse, len(prompt) - 1)  # at least one token must run to give logits
        logits = self._evaluate(reuse, prompt[reuse:])
        self.prefilled_tokens = len(prompt) - reuse
        return logits

    def _is_stop(self, token: int, stop_ids: set[int]) -> bool:
        if token in stop_ids:
            return True
        return not self.ours and self.tokenizer.is_end_of_generation(token)

    def generate_ids(
        self,
        prompt: list[int],
        params: SamplingParams,
        stop_ids: set[int],
        notices: list[str] | None = None,
        use_cache: bool = True,
    ) -> Iterator[Event]:
        if not prompt or len(prompt) >= self.context_length:
            raise ValueError(f"prompt of {len(prompt)} tokens does not fit the context of {self.context_length}")
        params.validate()
        self.cancel_flag.clear()
        return self._generate(list(prompt), params, set(stop_ids), list(notices or []), use_cache)

    def _generate(self, prompt, params, stop_ids, notices, use_cache) -> Iterator[Event]:
        seed = params.seed if params.seed is not None else random.randrange(2**63)
        rng = np.random.default_rng(seed)
        reply = ReplyStream(self.tokenizer, len(prompt), params.stop, min(params.max_tokens, self.context_length - len(prompt)))
        self.prefilled_tokens = 0

        def sample(logits: np.ndarray) -> int:
            return sample_next(logits, params, (prompt + reply.generated)[-REPETITION_WINDOW:], rng)

        def next_logits(token: int) -> np.ndarray:
            if use_cache:
                return self._evaluate(len(prompt) + len(reply.generated) - 1, [token])
            return self._evaluate(0, prompt + reply.generated)  # full recompute, for `chatapp bench`'s comparison

        if self.cancel_flag.is_set():
            reply.reason = "cancelled"
        else:
            if use_cache:
                logits = self._prefill(prompt)
            else:
                logits = self._evaluate(0, prompt)
                self.prefilled_tokens = len(prompt)
            yield from reply.run(logits, sample, lambda token: self._is_stop(token, stop_ids), next_logits, self.cancel_flag.is_set)
        yield from reply.finish(self.prefilled_tokens, notices)
