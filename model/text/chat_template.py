"""A foreign model's own Jinja chat template, rendered as the reference renders it, safely and bounded.

As the reference: the template sees each message's real text (so `split('</think>')`, `strip`,
`startswith` and `replace` work) and the variables transformers' `render_jinja_template` gives it
(`messages`, `tools` and `documents` as none, `add_generation_prompt`, `bos_token`, `eos_token`, and
keyword flags such as `enable_thinking` or `reasoning_effort`: `template_kwargs`), with HF's
extensions: `{% generation %}`, `raise_exception`, `strftime_now`, `tojson` with json.dumps's
arguments, HF's `namespace` and `dict`. An earlier reply's thinking (Message.reasoning) goes in a
`reasoning_content` field (and `thinking`, as HF aliases it) where the template reads one, else
inside the content as the model wrote it: byte for byte for a reply written in this process
(remember_written_reply, told by model.inference.reply_stream), else in the family's layout
(model.text.reasoning.join_reply). The text equals
transformers' for all of llama.cpp's 70 real templates (tests/model/test_chat_templates_match_reference.py).

Safe: message text never becomes a control token; only text the template writes does. Before
rendering, each control token's text inside a message (system, user, reply, thinking) is wrapped
in two private-use marks, U+F0000 before and U+F0001 after (marks already in the text are
dropped, so none can be forged). Rendering keeps them with the text they wrap, wherever the
template moves it. The rendered text is then split at control tokens, and a match counts as one
only where no mark touches it: `<|im_end|>` typed by a user sends those characters, not the
token. The marks are removed from the prompt's text, which therefore equals the reference's; a
template that tests text next to a typed control token (`startswith('<|im_end|>')`) sees the mark
first: the safe side. Only a reply's own thinking block at its start (`<think>...</think>` in the
template's layout) is left unmarked, since the model wrote those as tokens and templates split
there. A reply whose sampled ids are known keeps them where its text appears unchanged in the
prompt (the KV cache's prefix stays valid). Continuing a reply: its text ends with U+F0002, and
the prompt is cut there; a reply stopped inside its thinking (no answer yet) continues from the
prompt it started from and its thinking, the block left open (continuation_reasoning: what
follows is thinking until the block closes).

Bounded: the template is compiled and run in Jinja's immutable sandbox (no code execution); a
source over MAX_TEMPLATE_SOURCE_CHARS is refused before compiling (Jinja's compiler takes hundreds
of times a template's size); rendering ends after TEMPLATE_SECONDS (a trace function of the
rendering thread checks the clock at each call and each line of the template's code); strings or
lists longer than MAX_TEMPLATE_CHARS may not be built; on Linux (the llama.cpp worker) no more than
TEMPLATE_MEMORY_BYTES may be allocated. A template past a limit is refused with a one-line error.

Fitting a conversation to the context drops the oldest turns by bisection over the cut points
(a handful of renders, not one per dropped turn), and the last few renders are kept (fit, then
chat, render the same conversation).

A file without a template (a base model) gets CHATML_TEMPLATE when the
vocabulary has ChatML's markers, else PLAIN_TEMPLATE, a "User:/Assistant:" layout whose replies stop
at the next "User:" line. Torch-free.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from typing import Protocol

from model.errors import one_line
from model.text.chat_format import FittedPrompt, Message
from model.text.reasoning import ReasoningFormat, continuing_thinking, detect_format, join_reply, open_thinking

TEMPLATE_SECONDS = 1.0
MAX_TEMPLATE_CHARS = 10_000_000
MAX_TEMPLATE_SOURCE_CHARS = 200_000  # the largest real template known is about 17,000 characters (gpt-oss)
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


def _generation_extension():
    from jinja2 import nodes
    from jinja2.ext import Extension

    class GenerationTag(Extension):
        """HF's `{% generation %}...{% endgeneration %}`: marks the assistant's text for training
        masks; for a prompt it renders its body as is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    return GenerationTag


@functools.lru_cache(maxsize=1)
def _environment():
    import json

    import jinja2
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

    environment = BoundedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_generation_extension(), loopcontrols]
    )

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # HF's: no HTML escaping, and json.dumps's arguments
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    environment.filters["tojson"] = tojson
    environment.filters = {name: _bounded(f) for name, f in environment.filters.items()}

    def raise_exception(message):
        raise TemplateError(f"the template refused the conversation: {message}")

    def strftime_now(pattern):
        return time.strftime(str(pattern))

    class TemplateDict:  # HF's `dict`: no attribute access to the real type
        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):  # HF's: no underscore attributes
        def __init__(*args, **kwargs):  # noqa: N805 - Jinja's signature trick
            self, args = args[0], args[1:]
            attributes = dict(*args, **kwargs)
            for name in attributes:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attributes)

        def __setitem__(self, name, value):
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"a namespace attribute may not start with '_': {name!r}")

    environment.globals.update(
        raise_exception=raise_exception, strftime_now=strftime_now, dict=TemplateDict(), namespace=TemplateNamespace
    )
    return environment


_TEMPLATE_CODE = "<template>"  # the file name of the code Jinja compiles a template (from_string) to


class _OutOfTime(BaseException):
    """Raised in the rendering thread when its time is up (a BaseException: Jinja's handlers
    and the template's filters catch Exception only)."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    """While open, the code of this thread is ended with _OutOfTime once `seconds` have passed: a trace
    function checks the clock at each Python call in this thread (generators resumed included) and at
    each line of the template's own compiled code (its loops; `{% for %}` over a range calls nothing).
    Lines of Jinja's runtime, filters and the sandbox are not traced (finite steps between calls, and
    most of the lines run): a trace on every line cost four times the render. A timer thread raising
    asynchronously would cost nothing per line, but its raise can land anywhere, inside an import or
    holding a lock, and left later threads of the process hung. Yields `disarm`, which ends the check."""
    import sys
    import time

    deadline = time.monotonic() + seconds
    previous = sys.gettrace()
    state = {"armed": True}

    def check(frame, event, arg):
        if state["armed"] and time.monotonic() > deadline:
            raise _OutOfTime
        return check if frame.f_code.co_filename == _TEMPLATE_CODE else None

    def disarm():
        state["armed"] = False

    sys.settrace(check)
    try:
        yield disarm
    finally:
        sys.settrace(previous)


@contextlib.contextmanager
def _bounded_run(bounded_memory: bool):
    """The time limit, and in the worker the memory cap, around a compile or a render. The timer's
    thread starts before the cap (its stack is not the template's), and is disarmed inside it,
    so its raise can never skip undoing the cap."""
    with _time_limit(TEMPLATE_SECONDS) as disarm:
        with _memory_cap(TEMPLATE_MEMORY_BYTES if bounded_memory else None):
            try:
                yield
            finally:
                disarm()


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
def compile_template(source: str, bounded_memory: bool = False):
    """The compiled template. Compiling is bounded too: the source's size (Jinja's compiler takes
    hundreds of times a template's size in memory: a 2.3 MB template took 1.4 GB), the time and,
    in the worker, the memory."""
    if len(source) > MAX_TEMPLATE_SOURCE_CHARS:
        raise TemplateError(
            f"the chat template is too big to compile ({len(source):,} characters, the limit is "
            f"{MAX_TEMPLATE_SOURCE_CHARS:,}): refused"
        )
    # No time limit here: an asynchronous raise that lands inside Jinja's compiler (mid-import, holding a
    # lock) left the process unable to run a later thread (torch.compile's hung); the size limit above
    # keeps a compile to about 2 s.
    try:
        with _memory_cap(TEMPLATE_MEMORY_BYTES if bounded_memory else None):
            return _environment().from_string(source)
    except MemoryError:
        raise TemplateError(
            f"the chat template is too big to compile (it needed more than "
            f"{TEMPLATE_MEMORY_BYTES // 1_000_000} MB): refused"
        ) from None
    except RecursionError:
        raise TemplateError("the chat template is nested too deeply to compile: refused") from None
    except Exception as error:  # syntax errors and the like
        raise TemplateError(f"the chat template does not compile: {one_line(error, 200)}") from None


@functools.lru_cache(maxsize=8)
def template_variables(source: str) -> frozenset[str] | None:
    """The names a template reads from outside (its keyword flags among them); None if it does not parse."""
    from jinja2 import meta

    try:
        compile_template(source)  # the bounds first
        return frozenset(meta.find_undeclared_variables(_environment().parse(source)))
    except Exception:
        return None


def _collect(pieces) -> str:
    text, size = [], 0
    for piece in pieces:
        size += len(piece)
        if size > MAX_TEMPLATE_CHARS:
            raise _TooBig(f"its output passed {MAX_TEMPLATE_CHARS:,} characters")
        text.append(piece)
    return "".join(text)


def render_template(source: str, bounded_memory: bool = False, **variables) -> str:
    """The template's text for these variables, within the limits above."""
    template = compile_template(source, bounded_memory)
    try:
        with _bounded_run(bounded_memory):
            return _collect(template.generate(**variables))
    except _OutOfTime:
        raise TemplateError(f"the chat template took more than {TEMPLATE_SECONDS:g} s to render: refused") from None
    except _TooBig as error:
        raise TemplateError(f"the chat template is too big to render ({error}): refused") from None
    except MemoryError:
        raise TemplateError(
            f"the chat template is too big to render (it needed more than "
            f"{TEMPLATE_MEMORY_BYTES // 1_000_000} MB): refused"
        ) from None
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


_MARK_START, _MARK_END = "\U000f0000", "\U000f0001"  # around a control token's text inside a message
_CONTINUE_MARK = "\U000f0002"  # where the reply to continue ends
_MARKS = str.maketrans("", "", _MARK_START + _MARK_END + _CONTINUE_MARK)
_PROBE = "Qx7probe"  # a reply's text, to find what the template writes after a reply
# the message fields a template reads an earlier reply's thinking from (HF fills both from reasoning_content)
_READS_REASONING = re.compile(r"reasoning_content|\.thinking\b|\[\s*['\"]thinking['\"]\s*\]")
_RENDER_CACHE_SIZE = 8
_WRITTEN_REPLIES_KEPT = 16


def unmark(text: str) -> str:
    """The rendered text without the marks: the prompt's text as the reference renders it."""
    return text.translate(_MARKS)


class TemplateFormat:
    """A foreign model's chat format: its template, its vocabulary, its stops.

    Rendering sees the real message text; what makes it safe is the marking (see the
    module's docstring): `_mark` wraps each control token's text inside a message in
    private-use marks, and `segments` turns only unmarked control-token text into ids.
    `template_kwargs` (e.g. enable_thinking=False) go to the template as variables.
    """

    def __init__(
        self,
        vocab: TemplateVocab,
        template: str | None,
        eog_ids: set[int] | None = None,
        bounded_memory: bool = False,
        source: str = "the model",
        template_kwargs: dict | None = None,
    ):
        self.vocab = vocab
        self.source = source  # named in errors: the file the template came from
        self.has_own_template = bool(template)
        chatml = "<|im_start|>" in vocab.control_tokens and "<|im_end|>" in vocab.control_tokens
        self.template = template or (CHATML_TEMPLATE if chatml else PLAIN_TEMPLATE)
        self.stop_strings = [] if template or chatml else list(PLAIN_STOP_STRINGS)
        self.bounded_memory = bounded_memory
        # whitespace "tokens" (Gemma's runs of newlines) are text in templates and messages alike
        specials = sorted((t for t in vocab.control_tokens if t and not t.isspace()), key=len, reverse=True)
        self._control_pattern = re.compile("|".join(re.escape(s) for s in specials)) if specials else None
        self._template_kwargs = dict(template_kwargs or {})
        self._reads_reasoning = bool(_READS_REASONING.search(self.template))
        self._rendered: dict[tuple, str] = {}  # a few recent renders (fit, then chat, render the same)
        self._written: dict[tuple[str, str], str] = {}  # (thinking, answer) -> the reply as the model wrote it
        self._reasoning: tuple[ReasoningFormat | None] | None = None
        # token_bytes writes the reasoning markers' text (for a ReasoningSplitter downstream)
        self.show_reasoning_markers = False
        self.eog_ids = set(eog_ids or set())
        self.stop_ids = self.plain_stop_ids | self._end_of_turn_ids()
        self.notices = (
            []
            if self.has_own_template
            else [
                "this model has no chat template: "
                + ("ChatML is used" if chatml else "a plain 'User:/Assistant:' layout is used")
            ]
        )

    @property
    def template_kwargs(self) -> dict:
        return dict(self._template_kwargs)

    @template_kwargs.setter
    def template_kwargs(self, values: dict) -> None:
        if dict(values) == self._template_kwargs:
            return  # set before each reply: the renders kept stay good
        self._template_kwargs = dict(values)
        self._rendered.clear()
        self._reasoning = None

    # reasoning

    @property
    def reasoning_format(self) -> ReasoningFormat | None:
        """The template's reasoning layout (model.text.reasoning), with the current template_kwargs."""
        if self._reasoning is None:
            fmt = None
            if self.has_own_template:
                try:
                    prompt = self.generation_prompt()
                except TemplateError:
                    prompt = None
                fmt = detect_format(self.template, prompt, template_variables(self.template))
            self._reasoning = (fmt,)
        return self._reasoning[0]

    def generation_prompt(self) -> str:
        """The text the template writes to start a reply (after a user message)."""
        messages = [Message("user", _PROBE)]
        with_prompt = unmark(self._render_text(messages, True))
        without = unmark(self._render_text(messages, False))
        return with_prompt[len(without) :] if with_prompt.startswith(without) else with_prompt

    # rendering

    def _mark(self, text: str) -> str:
        """Message text as the template sees it: each control token's text wrapped in marks (marks
        the text held are dropped first, so none can be forged)."""
        text = text.translate(_MARKS)
        if self._control_pattern is None or not self._control_pattern.search(text):
            return text
        return self._control_pattern.sub(lambda m: _MARK_START + m.group(0) + _MARK_END, text)

    def _mark_reply(self, text: str) -> str:
        """A reply's text, marked, except the thinking block's own markers at its start (the model
        wrote them; a template reads them, as in `content.split('</think>')`)."""
        fmt = self.reasoning_format
        close_at = text.find(fmt.close) if fmt is not None else -1
        if fmt is None or close_at < 0:
            return self._mark(text)
        head, rest = text[:close_at], text[close_at + len(fmt.close) :]
        if not head.lstrip().startswith(fmt.open):
            return self._mark(text)  # no thinking block at the start: all of it is text
        at = head.index(fmt.open)
        inside = head[at + len(fmt.open) :]
        return head[:at] + fmt.open + self._mark(inside) + fmt.close + self._mark(rest)

    def _message_dict(self, message: Message) -> dict:
        content = self._mark_reply(message.content) if message.role == "assistant" else self._mark(message.content)
        if not (message.reasoning and message.role == "assistant"):
            return {"role": message.role, "content": content}
        thinking = self._mark(message.reasoning)
        if self._reads_reasoning:  # as HF passes it: reasoning_content, and thinking for gpt-oss
            return {"thinking": thinking, "role": message.role, "content": content, "reasoning_content": thinking}
        written = self._as_written(message)
        if written is None:
            written = join_reply(thinking, content, self.reasoning_format)
        return {"role": message.role, "content": written}

    def remember_written_reply(self, thinking: str, answer: str, written: str) -> None:
        """A reply this format's model just wrote (model.inference.reply_stream): the next prompts
        write it back byte for byte where the template passes it through, whatever whitespace the
        model put around its markers (join_reply writes the family's habit)."""
        fmt = self.reasoning_format
        if fmt is not None and fmt.starts_inside:  # the prompt opened the block: as the template sees it
            prompt = self.generation_prompt()
            written = prompt[prompt.rfind(fmt.open) :] + written
        if len(self._written) >= _WRITTEN_REPLIES_KEPT:
            self._written.pop(next(iter(self._written)))
        if self._written.get((thinking, answer)) != written:
            self._rendered.clear()  # a render kept may hold the same reply written otherwise
        self._written[(thinking, answer)] = written

    def _as_written(self, message: Message) -> str | None:
        """A remembered reply's text, marked: its thinking and answer as message text, the markers
        and whitespace around them as the model wrote them."""
        written = self._written.get((message.reasoning, message.content))
        fmt = self.reasoning_format
        if written is None or fmt is None or fmt.open not in written:
            return None
        opened = written.index(fmt.open) + len(fmt.open)
        thinking_at = written.find(message.reasoning, opened)  # after the prompt's `<think>\n`, say
        thinking_end = thinking_at + len(message.reasoning)
        answer_at = written.rfind(message.content)
        if thinking_at < 0 or written[opened:thinking_at].strip() or fmt.close not in written[thinking_end:answer_at]:
            return None  # not the layout the splitter read (a repeated opening marker): join_reply's
        return (
            written[:thinking_at]
            + self._mark(message.reasoning)
            + written[thinking_end:answer_at]
            + self._mark(message.content)
            + written[answer_at + len(message.content) :]
        )

    def continues_thinking(self, messages: list[Message]) -> bool:
        """The last message is a reply stopped inside its thinking (thinking, no answer yet), in a
        template with a reasoning layout: continuing it goes on inside the thinking."""
        last = messages[-1] if messages else None
        return (
            last is not None
            and last.role == "assistant"
            and bool(last.reasoning)
            and not last.content
            and self.reasoning_format is not None
        )

    def continuation_reasoning(self, messages: list[Message]) -> ReasoningFormat | None:
        """How more of the last reply is split into thinking and answer: from inside the thinking
        where it stopped there, else all answer (None)."""
        fmt = self.reasoning_format
        return continuing_thinking(fmt) if fmt is not None and self.continues_thinking(messages) else None

    def _render_text(self, messages: list[Message], add_generation_prompt: bool, continue_last: bool = False) -> str:
        """The template's text, marked; a template that refuses a system message (Gemma's) gets
        the system text at the start of the first user message instead."""
        key = (tuple(messages), add_generation_prompt, continue_last)
        if key in self._rendered:
            return self._rendered[key]
        if continue_last and self.continues_thinking(messages):
            text = self._render_open_thinking(messages)
        else:
            text = self._render_folding_if_refused(messages, add_generation_prompt, continue_last)
        if len(self._rendered) >= _RENDER_CACHE_SIZE:
            self._rendered.pop(next(iter(self._rendered)))
        self._rendered[key] = text
        return text

    def _render_open_thinking(self, messages: list[Message]) -> str:
        """A reply stopped inside its thinking, to continue: the prompt it was started from, then its
        thinking as the model wrote it, the block left open (a template writes an earlier reply's
        thinking closed, or drops it)."""
        fmt = self.reasoning_format
        assert fmt is not None
        return self._render_text(messages[:-1], True) + open_thinking(self._mark(messages[-1].reasoning), fmt)

    def _render_folding_if_refused(
        self, messages: list[Message], add_generation_prompt: bool, continue_last: bool
    ) -> str:
        try:
            return self._render_text_as_given(messages, add_generation_prompt, continue_last)
        except TemplateError as error:
            folded = fold_system_message(messages)
            if folded is None:
                raise TemplateError(f"{self.source}: {error}") from None
            try:
                return self._render_text_as_given(folded, add_generation_prompt, continue_last)
            except TemplateError:
                raise TemplateError(f"{self.source}: {error}") from None

    def _render_text_as_given(self, messages: list[Message], add_generation_prompt: bool, continue_last: bool) -> str:
        def text(token_id):
            return self.vocab.token_text(token_id) if token_id is not None and token_id >= 0 else ""

        dicts = [self._message_dict(m) for m in messages]
        if continue_last:
            dicts[-1]["content"] += _CONTINUE_MARK
        variables = {
            **self._template_kwargs,
            "messages": dicts,
            "tools": None,
            "documents": None,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": text(self.vocab.bos_id),
            "eos_token": text(self.vocab.eos_id),
        }
        rendered = render_template(self.template, self.bounded_memory, **variables)
        if continue_last:
            at = rendered.rfind(_CONTINUE_MARK)
            if at < 0:
                raise TemplateError("the template leaves out the reply to continue")
            rendered = rendered[:at]
        return rendered

    def prompt_text(
        self, messages: list[Message], add_generation_prompt: bool = True, continue_last: bool = False
    ) -> str:
        """The prompt's text, as the reference renderer (transformers') writes it."""
        return unmark(self._render_text(messages, add_generation_prompt and not continue_last, continue_last))

    def segments(self, text: str) -> list[tuple[str, bool]]:
        """Marked rendered text as (text, is_control_token) runs: a control token only where its
        text is not marked (the template wrote it), plain text without the marks."""
        out: list[tuple[str, bool]] = []
        at = 0
        for match in self._control_pattern.finditer(text) if self._control_pattern else []:
            start, end = match.span()
            if (start and text[start - 1] == _MARK_START) or (end < len(text) and text[end] == _MARK_END):
                continue  # typed in a message: text
            if start > at:
                out.append((unmark(text[at:start]), False))
            out.append((match.group(0), True))
            at = end
        if at < len(text):
            out.append((unmark(text[at:]), False))
        return [(t, control) for t, control in out if t]

    def _tokenize(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece, control in self.segments(text):
            ids += [self.vocab.control_tokens[piece]] if control else self.vocab.encode(piece)
        return ids

    def render(
        self,
        messages: list[Message],
        add_generation_prompt: bool = True,
        known_replies: dict[str, list[int]] | None = None,
        continue_last: bool = False,
    ) -> list[int]:
        text = self._render_text(messages, add_generation_prompt and not continue_last, continue_last)
        ids = self._tokenize_with_known_reply(text, messages, known_replies or {}, continue_last)
        bos = self.vocab.bos_id
        if self.vocab.add_bos and bos is not None and bos >= 0 and ids[:1] != [bos]:
            ids.insert(0, bos)
        return ids

    def _tokenize_with_known_reply(
        self, text: str, messages: list[Message], known_replies: dict[str, list[int]], continue_last: bool
    ) -> list[int]:
        """A reply whose sampled ids are known keeps them (the cache's prefix stays valid), where the
        template wrote its text unchanged: the last such text in the prompt."""
        replies = [m for m in messages if m.role == "assistant" and m.content and m.content in known_replies]
        if replies:
            reply = replies[-1]
            marked = self._mark_reply(reply.content)
            at = len(text) - len(marked) if continue_last and text.endswith(marked) else text.rfind(marked)
            if at >= 0:
                before, after = text[:at], text[at + len(marked) :]
                return self._tokenize(before) + list(known_replies[reply.content]) + self._tokenize(after)
        return self._tokenize(text)

    def _end_of_turn_ids(self) -> set[int]:
        """The control token the template writes right after a reply (e.g. <|im_end|>, <end_of_turn>)."""
        try:
            text = self._render_text([Message("user", "a"), Message("assistant", _PROBE)], False)
        except TemplateError:
            return set()
        at = text.rfind(_PROBE)
        if at < 0 or self._control_pattern is None:
            return set()
        match = self._control_pattern.match(text[at + len(_PROBE) :].lstrip())
        return {self.vocab.control_tokens[match.group(0)]} if match else set()

    # fitting to the context

    def _cut_front(self, message: Message, over: int) -> Message:
        """The message without (about) its first `over` tokens."""
        content = self.vocab.encode(message.content)
        keep = max(len(content) - over - 2, 0)
        kept_text = self.decode_plain(content[len(content) - keep :]) if keep else ""
        return Message(message.role, kept_text)

    def decode_plain(self, ids: list[int]) -> str:
        return b"".join(self.vocab.token_bytes(i) for i in ids).decode("utf-8", errors="ignore")

    def fit(
        self,
        messages: list[Message],
        context_length: int,
        reserve: int,
        known_replies: dict[str, list[int]] | None = None,
        continue_last: bool = False,
    ) -> FittedPrompt:
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
        if len(ids) > budget and len(turns) > 1:
            # keep turns[cut:], cut at a user message (strict templates, Gemma's, start with one): the
            # first cut that fits, found by bisection (a few renders, not one per dropped turn)
            cuts = [i for i in range(1, len(turns)) if turns[i].role == "user"]
            low, high, best = 0, len(cuts) - 1, None
            while low <= high:
                middle = (low + high) // 2
                candidate = render(turns[cuts[middle] :])
                if len(candidate) <= budget:
                    best, high = (cuts[middle], candidate), middle - 1
                else:
                    low = middle + 1
            if best is None and cuts:  # not even the newest turns fit: they are cut below
                best = (cuts[-1], render(turns[cuts[-1] :]))
            if best is not None:
                dropped, ids = best
                turns = turns[dropped:]
        truncated = 0
        for _ in range(8):  # the newest message alone is too long: keep its end
            if len(ids) <= budget or not turns or not turns[-1].content:
                break
            before = len(self.vocab.encode(turns[-1].content))
            turns[-1] = self._cut_front(turns[-1], len(ids) - budget)
            truncated += before - len(self.vocab.encode(turns[-1].content))
            ids = render(turns)
        if len(ids) > budget:
            raise ValueError(
                f"the prompt does not fit the context of {context_length} tokens with {reserve} kept for the reply"
            )
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
        if self.show_reasoning_markers and token_id in self.reasoning_marker_ids:
            return self.vocab.token_text(token_id).encode()
        return self.vocab.token_bytes(token_id)

    def control_token_name(self, token_id: int) -> str | None:
        """A token that stands for no text (an end of turn, a role marker) by its name in the vocabulary
        (<|im_end|>), for the inspector; None for an ordinary token."""
        if self.vocab.token_bytes(token_id):
            return None
        return self.vocab.token_text(token_id) or None

    @functools.cached_property
    def reasoning_marker_ids(self) -> set[int]:
        """The control tokens of the reasoning layout's markers (gpt-oss's `<|channel|>`, Mistral's
        `[THINK]`): a detokenizer writes them as nothing, a ReasoningSplitter needs their text."""
        fmt = self.reasoning_format
        if fmt is None:
            return set()
        return {self.vocab.control_tokens[t] for t in fmt.marker_tokens if t in self.vocab.control_tokens}
