"""A foreign model's own Jinja chat template, rendered safely and bounded.

Safe: message text never becomes a control token. The template is rendered
with a placeholder for each message's text; the template's own text is then
split at the control tokens it writes (tokenized by id), and the message text
is put back as plain text (encoded without special-token parsing). So a user
who types `<|im_end|>` sends those characters, not the token.

Bounded: the template runs in Jinja's immutable sandbox (no code execution),
must finish within TEMPLATE_SECONDS (a trace function checks the time at each
line of the template's code), may not build strings or lists longer than
MAX_TEMPLATE_CHARS, and on Linux may not allocate more than
TEMPLATE_MEMORY_BYTES. A template past a limit is refused with a one-line
error.

A file without a template (a base model) gets CHATML_TEMPLATE when the
vocabulary has ChatML's markers, else PLAIN_TEMPLATE, a "User:/Assistant:"
layout whose replies stop at the next "User:" line. Torch-free.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
import time
from dataclasses import dataclass
from typing import Protocol

from model.errors import one_line
from model.text.chat_format import FittedPrompt, Message

TEMPLATE_SECONDS = 1.0
MAX_TEMPLATE_CHARS = 10_000_000
MAX_EXPONENT = 1_000  # a huge power is one long C call that no time check can stop
TEMPLATE_MEMORY_BYTES = 300_000_000
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PLAIN_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% else %}Assistant: {{ message['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
PLAIN_STOP_STRINGS = ["\nUser:", "\nAssistant:"]
SYSTEM_OVERHEAD_TOKENS = 16  # what a template writes around a system message, at most (an estimate)

_PLACEHOLDER = " \ue000{}\ue001 "  # the spaces show whether the template trimmed the text
_PLACEHOLDER_PATTERN = re.compile(r"( ?)\ue000(\d+)\ue001( ?)")


class TemplateError(ValueError):
    """A chat template that fails or passes a limit; the message is one line."""


class TemplateVocab(Protocol):
    """What rendering needs from a foreign model's tokenizer."""

    control_tokens: dict[str, int]  # text -> id of every token that special-token parsing recognises
    add_bos: bool

    @property
    def bos_id(self) -> int | None: ...  # read only: a vocabulary whose ids are plain ints fits too

    @property
    def eos_id(self) -> int | None: ...

    def encode(self, text: str) -> list[int]: ...  # plain text: no special tokens, no BOS

    def token_text(self, token_id: int) -> str: ...  # the token as the vocabulary writes it

    def token_bytes(self, token_id: int) -> bytes: ...  # what the token stands for in generated text


# --- the bounded sandbox ---

class _TooBig(Exception):
    pass


def _check_size(value) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_TEMPLATE_CHARS:
        raise _TooBig(f"a value of {value} is past the template limit of {MAX_TEMPLATE_CHARS:,}")


def _bounded(function):
    @functools.wraps(function)
    def call(*args, **kwargs):
        for value in list(args) + list(kwargs.values()):
            _check_size(value)
        return function(*args, **kwargs)
    return call


@functools.lru_cache(maxsize=1)
def _environment():
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "+", "**", "%"})

        def call_binop(self, context, operator, left, right):
            if operator == "*":
                for sequence, count in ((left, right), (right, left)):
                    if isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
                        _check_size(len(sequence) * count)
            if operator == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT:
                raise _TooBig(f"an exponent of {right} is past the template limit of {MAX_EXPONENT}")
            result = super().call_binop(context, operator, left, right)
            if isinstance(result, (str, list, tuple)):
                _check_size(len(result))
            return result

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's signature
            for value in list(args) + list(kwargs.values()):
                _check_size(value)
            return super().call(__context, __obj, *args, **kwargs)

    environment = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    environment.filters = {name: _bounded(f) for name, f in environment.filters.items()}

    def raise_exception(message):
        raise TemplateError(f"the template refused the conversation: {message}")

    def strftime_now(pattern):
        return time.strftime(str(pattern))

    environment.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    return environment


class _Deadline:
    """A trace function that ends the template's code once its time is up."""

    def __init__(self, seconds: float):
        self.ends_at = time.monotonic() + seconds

    def __call__(self, frame, event, arg):
        if frame.f_code.co_filename != "<template>":
            return None
        return self.check

    def check(self, frame=None, event=None, arg=None):
        if time.monotonic() > self.ends_at:
            raise TimeoutError
        return self.check


@contextlib.contextmanager
def _traced(deadline: _Deadline):
    previous = sys.gettrace()
    sys.settrace(deadline)
    try:
        yield
    finally:
        sys.settrace(previous)


@contextlib.contextmanager
def _memory_cap(extra: int | None):
    """On Linux, while open: allocations of more than `extra` bytes beyond what is in use fail
    (MemoryError). The limit is the whole process's, so only the llama.cpp worker sets it."""
    previous = None
    if extra is not None:
        try:
            import resource

            with open("/proc/self/statm") as f:
                in_use = int(f.read().split()[0]) * resource.getpagesize()
            previous = resource.getrlimit(resource.RLIMIT_AS)
            if previous[1] == resource.RLIM_INFINITY or in_use + extra < previous[1]:
                resource.setrlimit(resource.RLIMIT_AS, (in_use + extra, previous[1]))
        except (ImportError, OSError, ValueError):
            previous = None
    try:
        yield
    finally:
        if previous is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, previous)


@functools.lru_cache(maxsize=8)
def compile_template(source: str):
    try:
        return _environment().from_string(source)
    except Exception as error:  # syntax errors and the like
        raise TemplateError(f"the chat template does not compile: {one_line(error, 200)}") from None


def _collect(pieces, deadline: _Deadline) -> str:
    text, size = [], 0
    for piece in pieces:
        size += len(piece)
        if size > MAX_TEMPLATE_CHARS:
            raise _TooBig(f"its output passed {MAX_TEMPLATE_CHARS:,} characters")
        deadline.check()
        text.append(piece)
    return "".join(text)


def render_template(source: str, bounded_memory: bool = False, **variables) -> str:
    """The template's text for these variables, within the limits above."""
    template = compile_template(source)
    deadline = _Deadline(TEMPLATE_SECONDS)
    try:
        with _memory_cap(TEMPLATE_MEMORY_BYTES if bounded_memory else None), _traced(deadline):
            return _collect(template.generate(**variables), deadline)
    except TimeoutError:
        raise TemplateError(f"the chat template took more than {TEMPLATE_SECONDS:g} s to render: refused") from None
    except _TooBig as error:
        raise TemplateError(f"the chat template is too big to render ({error}): refused") from None
    except MemoryError:
        raise TemplateError(f"the chat template is too big to render (it needed more than "
                            f"{TEMPLATE_MEMORY_BYTES // 1_000_000} MB): refused") from None
    except TemplateError:
        raise
    except Exception as error:  # jinja errors, sandbox refusals
        raise TemplateError(f"the chat template failed: {one_line(error, 200)}") from None


# --- messages to ids ---

def fold_system_message(messages: list[Message]) -> list[Message] | None:
    """The system text moved into the first user message; None when there is nothing to fold."""
    if len(messages) < 2 or messages[0].role != "system" or messages[1].role != "user":
        return None
    return [Message("user", f"{messages[0].content}\n\n{messages[1].content}")] + messages[2:]


@dataclass
class _Piece:
    text: str
    message: int | None = None  # index of the message this text is the content of; None: the template's text


class TemplateFormat:
    """A foreign model's chat format: its template, its vocabulary, its stops."""

    def __init__(self, vocab: TemplateVocab, template: str | None, eog_ids: set[int] | None = None,
                 bounded_memory: bool = False, source: str = "the model"):
        self.vocab = vocab
        self.source = source  # named in errors: the file the template came from
        self.has_own_template = bool(template)
        chatml = "<|im_start|>" in vocab.control_tokens and "<|im_end|>" in vocab.control_tokens
        self.template = template or (CHATML_TEMPLATE if chatml else PLAIN_TEMPLATE)
        self.stop_strings = [] if template or chatml else list(PLAIN_STOP_STRINGS)
        self.bounded_memory = bounded_memory
        specials = sorted(vocab.control_tokens, key=len, reverse=True)
        self._control_pattern = re.compile("|".join(re.escape(s) for s in specials if s)) if specials else None
        self.eog_ids = set(eog_ids or set())
        self.stop_ids = self.plain_stop_ids | self._end_of_turn_ids()
        self.notices = [] if self.has_own_template else [
            "this model has no chat template: " + ("ChatML is used" if chatml else "a plain 'User:/Assistant:' layout is used")]

    # rendering

    def _render_pieces(self, messages: list[Message], add_generation_prompt: bool) -> list[_Piece]:
        """The template's pieces; a template that refuses a system message (Gemma's) gets
        the system text at the start of the first user message instead."""
        try:
            return self._render_pieces_as_given(messages, add_generation_prompt)
        except TemplateError as error:
            folded = fold_system_message(messages)
            if folded is None:
                raise TemplateError(f"{self.source}: {error}") from None
            try:
                pieces = self._render_pieces_as_given(folded, add_generation_prompt)
            except TemplateError:
                raise TemplateError(f"{self.source}: {error}") from None
            # the folded message stands for the first user message; indices past it shift by one
            for piece in pieces:
                if piece.message is not None and piece.message >= 1:
                    piece.message += 1
            return pieces

    def _render_pieces_as_given(self, messages: list[Message], add_generation_prompt: bool) -> list[_Piece]:
        def text(token_id):
            return self.vocab.token_text(token_id) if token_id is not None and token_id >= 0 else ""

        placeholders = [{"role": m.role, "content": _PLACEHOLDER.format(i)} for i, m in enumerate(messages)]
        rendered = render_template(self.template, self.bounded_memory, messages=placeholders,
                                   add_generation_prompt=add_generation_prompt,
                                   bos_token=text(self.vocab.bos_id), eos_token=text(self.vocab.eos_id))
        pieces, at = [], 0
        for match in _PLACEHOLDER_PATTERN.finditer(rendered):
            index = int(match.group(2))
            if index >= len(messages):
                continue
            pieces.append(_Piece(rendered[at:match.start()]))
            content = messages[index].content
            if not match.group(1):
                content = content.lstrip()
            if not match.group(3):
                content = content.rstrip()
            pieces.append(_Piece(content, index))
            at = match.end()
        pieces.append(_Piece(rendered[at:]))
        return pieces

    def _tokenize(self, pieces: list[_Piece], known_ids: dict[int, list[int]]) -> list[int]:
        """Control tokens only where the template wrote them; plain runs encoded as one text each,
        except a reply whose sampled ids are known, which keeps them."""
        ids: list[int] = []
        run: list[str] = []

        def flush():
            if run:
                ids.extend(self.vocab.encode("".join(run)))
                run.clear()

        for piece in pieces:
            if piece.message is not None:
                if piece.message in known_ids:
                    flush()
                    ids.extend(known_ids[piece.message])
                else:
                    run.append(piece.text)
                continue
            at = 0
            for match in self._control_pattern.finditer(piece.text) if self._control_pattern else []:
                run.append(piece.text[at:match.start()])
                flush()
                ids.append(self.vocab.control_tokens[match.group(0)])
                at = match.end()
            run.append(piece.text[at:])
        flush()
        bos = self.vocab.bos_id
        if self.vocab.add_bos and bos is not None and bos >= 0 and ids[:1] != [bos]:
            ids.insert(0, bos)
        return ids

    def render(self, messages: list[Message], add_generation_prompt: bool = True,
               known_replies: dict[str, list[int]] | None = None, continue_last: bool = False) -> list[int]:
        pieces = self._render_pieces(messages, add_generation_prompt and not continue_last)
        if continue_last:  # end right after the unfinished reply's text
            last = max(i for i, p in enumerate(pieces) if p.message == len(messages) - 1)
            pieces = pieces[: last + 1]
        known = {}
        for index, message in enumerate(messages):
            if message.role == "assistant" and known_replies and message.content in known_replies:
                known[index] = known_replies[message.content]
        return self._tokenize(pieces, known)

    def _end_of_turn_ids(self) -> set[int]:
        """The control token the template writes right after a reply (e.g. <|im_end|>, <end_of_turn>)."""
        try:
            pieces = self._render_pieces([Message("user", "a"), Message("assistant", "b")], False)
        except TemplateError:
            return set()
        after = [i for i, p in enumerate(pieces) if p.message == 1]
        if not after or after[-1] + 1 >= len(pieces) or self._control_pattern is None:
            return set()
        match = self._control_pattern.match(pieces[after[-1] + 1].text.lstrip())
        return {self.vocab.control_tokens[match.group(0)]} if match else set()

    # fitting to the context

    def _cut_front(self, message: Message, over: int) -> Message:
        """The message without (about) its first `over` tokens."""
        content = self.vocab.encode(message.content)
        keep = max(len(content) - over - 2, 0)
        kept_text = self.decode_plain(content[len(content) - keep:]) if keep else ""
        return Message(message.role, kept_text)

    def decode_plain(self, ids: list[int]) -> str:
        return b"".join(self.vocab.token_bytes(i) for i in ids).decode("utf-8", errors="ignore")

    def fit(self, messages: list[Message], context_length: int, reserve: int,
            known_replies: dict[str, list[int]] | None = None, continue_last: bool = False) -> FittedPrompt:
        """As model.text.chat_format.fit_to_context: drop the oldest turns, keep the system prompt
        (cut to half the room at most), cut the newest message from the front if alone too long."""
        if continue_last and (not messages or messages[-1].role != "assistant"):
            raise ValueError("continuing needs an assistant reply as the last message")
        if reserve >= context_length:
            raise ValueError(f"reply reserve ({reserve}) must be smaller than the context length ({context_length})")
        budget = context_length - reserve
        notices = list(self.notices)
        system = [m for m in messages if m.role == "system"][:1]
        turns = [m for m in messages if m.role != "system"]

        def render(kept_turns):
            return self.render(system + kept_turns, True, known_replies, continue_last and bool(kept_turns))

        if system:  # a system prompt may not take over the context
            over = len(self.vocab.encode(system[0].content)) + SYSTEM_OVERHEAD_TOKENS - budget // 2
            if over > 0:
                system = [self._cut_front(system[0], over)]
                notices.append("the system prompt was cut to fit the context")
        ids = render(turns)
        dropped = 0
        while len(ids) > budget and len(turns) > 1:
            kept = turns[1:]
            while kept and kept[0].role != "user":  # strict templates (Gemma's) start with a user turn
                kept = kept[1:]
            if not kept:
                break  # the newest message is cut below instead
            dropped += len(turns) - len(kept)
            turns = kept
            ids = render(turns)
        truncated = 0
        for _ in range(8):  # the newest message alone is too long: keep its end
            if len(ids) <= budget or not turns or not turns[-1].content:
                break
            before = len(self.vocab.encode(turns[-1].content))
            turns[-1] = self._cut_front(turns[-1], len(ids) - budget)
            truncated += before - len(self.vocab.encode(turns[-1].content))
            ids = render(turns)
        if len(ids) > budget:
            raise ValueError(f"the prompt does not fit the context of {context_length} tokens with {reserve} kept for the reply")
        if truncated:
            notices.append(f"the last message was too long for the context: its first {truncated} tokens were left out")
        if dropped:
            notices.append(f"{dropped} earlier message(s) no longer fit the context and were left out")
        return FittedPrompt(ids, dropped, truncated, notices)

    def plain_prompt(self, text: str) -> list[int]:
        """Plain text to continue (no chat format)."""
        bos = self.vocab.bos_id
        start = [bos] if self.vocab.add_bos and bos is not None and bos >= 0 else []
        return start + self.vocab.encode(text)

    @property
    def plain_stop_ids(self) -> set[int]:
        return {i for i in (self.vocab.eos_id,) if i is not None and i >= 0} | self.eog_ids

    def token_bytes(self, token_id: int) -> bytes:
        return self.vocab.token_bytes(token_id)
