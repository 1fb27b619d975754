"""How messages become token ids: the one definition of the chat format.

    <|system|>TEXT<|end|><|user|>TEXT<|end|><|assistant|>TEXT<|end|>...<|assistant|>

Role markers and <|end|> are inserted by id; message text is encoded as
plain text, so a user cannot inject a special token. The same format is
written into GGUF files as a Jinja template generated from these constants
(`jinja_chat_template`), and the tests check both render the same ids.

When a conversation does not fit the context, the oldest turns are dropped
(the system prompt is kept) so that the reply keeps `reserve` tokens of room;
a single message larger than the context is cut from the front, with a notice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.text.tokenizer import ASSISTANT, END_OF_TURN, SYSTEM, USER, Tokenizer

ROLES = ("system", "user", "assistant")
ROLE_MARKERS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    reasoning: str = ""  # an assistant reply's thinking, apart from its answer (model.text.reasoning)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"message role must be one of {', '.join(ROLES)}, not {self.role!r}")


@dataclass
class FittedPrompt:
    ids: list[int]
    dropped_messages: int = 0  # oldest non-system messages left out
    truncated_tokens: int = 0  # tokens cut from the front of a message too long on its own
    notices: list[str] = field(default_factory=list)
    token_count: int | None = None  # a remote model's prompt: its ids are not known here, only their estimated count
    messages: list[Message] | None = None  # the messages kept, for a backend that sends text (a remote model)

    @property
    def size(self) -> int:
        """Tokens the prompt takes."""
        return self.token_count if self.token_count is not None else len(self.ids)


def encode_message(
    message: Message, tokenizer: Tokenizer, closed: bool = True, known_replies: dict[str, list[int]] | None = None
) -> list[int]:
    """Role marker, text, <|end|>. A reply the engine sampled itself keeps its
    sampled ids (known_replies), which may differ from re-encoding its text:
    that keeps the KV cache prefix valid in the next turn."""
    content = None
    if known_replies and message.role == "assistant":
        content = known_replies.get(message.content)
    if content is None:
        content = tokenizer.encode(message.content)
    ids = [tokenizer.special_ids[ROLE_MARKERS[message.role]]] + content
    return ids + [tokenizer.end_of_turn_id] if closed else ids


def render_ids(
    messages: list[Message],
    tokenizer: Tokenizer,
    add_generation_prompt: bool = True,
    known_replies: dict[str, list[int]] | None = None,
) -> list[int]:
    """Token ids for a conversation; with the assistant marker to reply after."""
    ids: list[int] = []
    for message in messages:
        ids += encode_message(message, tokenizer, known_replies=known_replies)
    if add_generation_prompt:
        ids.append(tokenizer.special_ids[ASSISTANT])
    return ids


def fit_to_context(
    messages: list[Message],
    tokenizer: Tokenizer,
    context_length: int,
    reserve: int,
    known_replies: dict[str, list[int]] | None = None,
    continue_last: bool = False,
) -> FittedPrompt:
    """Prompt ids that leave `reserve` tokens for the reply within context_length.

    continue_last: the last message is an unfinished assistant reply to go on
    with, so it stays open and no new assistant marker follows.
    """
    if continue_last and (not messages or messages[-1].role != "assistant"):
        raise ValueError("continuing needs an assistant reply as the last message")
    if reserve >= context_length:
        raise ValueError(f"reply reserve ({reserve}) must be smaller than the context length ({context_length})")
    budget = context_length - reserve
    system = [m for m in messages if m.role == "system"][:1]
    turns = [m for m in messages if m.role != "system"]
    system_ids = encode_message(system[0], tokenizer) if system else []
    generation_prompt = [] if continue_last else [tokenizer.special_ids[ASSISTANT]]
    notices: list[str] = []
    if len(system_ids) + 1 > budget // 2:  # a system prompt may not take over the context
        keep = max(budget // 2 - 3, 0)
        content = tokenizer.encode(system[0].content)
        system_ids = [tokenizer.special_ids[SYSTEM]] + content[len(content) - keep :] + [tokenizer.end_of_turn_id]
        notices.append(f"the system prompt was cut to its last {keep} tokens to fit the context")

    kept: list[list[int]] = []
    used = len(system_ids) + len(generation_prompt)
    for position, message in enumerate(reversed(turns)):
        closed = not (continue_last and position == 0)
        encoded = encode_message(message, tokenizer, closed=closed, known_replies=known_replies)
        if used + len(encoded) > budget:
            break
        kept.insert(0, encoded)
        used += len(encoded)
    dropped = len(turns) - len(kept)
    truncated = 0
    if not kept and turns:
        # the newest message alone does not fit: keep its end
        newest = turns[-1]
        content = tokenizer.encode(newest.content)
        room = budget - used - 2
        truncated = len(content) - max(room, 0)
        closing = [] if continue_last else [tokenizer.end_of_turn_id]
        kept = [[tokenizer.special_ids[ROLE_MARKERS[newest.role]]] + content[truncated:] + closing]
        dropped = len(turns) - 1
        notices.append(f"the last message was too long for the context: its first {truncated} tokens were left out")
    if dropped:
        notices.append(f"{dropped} earlier message(s) no longer fit the context and were left out")
    ids = system_ids + [t for encoded in kept for t in encoded] + generation_prompt
    return FittedPrompt(ids, dropped, truncated, notices)


def jinja_chat_template() -> str:
    """The chat format as a Jinja template (for GGUF's tokenizer.chat_template)."""
    parts = ["{%- for message in messages -%}"]
    for role, marker in ROLE_MARKERS.items():
        keyword = "if" if role == ROLES[0] else "elif"
        parts.append(
            f"{{%- {keyword} message['role'] == '{role}' -%}}{marker}{{{{ message['content'] }}}}{END_OF_TURN}"
        )
    parts.append("{%- endif -%}")
    parts.append("{%- endfor -%}")
    parts.append(f"{{%- if add_generation_prompt -%}}{ASSISTANT}{{%- endif -%}}")
    return "".join(parts)


class ChatappFormat:
    """Our own chat format, behind the same face as model.text.chat_template.TemplateFormat
    (the engine core asks either for fitted prompt ids, stops and token bytes)."""

    has_own_template = True
    stop_strings: list[str] = []
    notices: list[str] = []

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.stop_ids = {tokenizer.end_of_turn_id, tokenizer.end_of_text_id}
        self.plain_stop_ids = set(self.stop_ids)  # a chat model ends plain text at <|end|> too
        self._control_ids = set(tokenizer.special_ids.values())
        self._control_names = {token_id: name for name, token_id in tokenizer.special_ids.items()}

    def fit(
        self,
        messages: list[Message],
        context_length: int,
        reserve: int,
        known_replies: dict[str, list[int]] | None = None,
        continue_last: bool = False,
    ) -> FittedPrompt:
        return fit_to_context(messages, self.tokenizer, context_length, reserve, known_replies, continue_last)

    def continuation_reasoning(self, messages: list[Message]) -> None:
        """Our format has no thinking: more of a reply is all answer (as TemplateFormat's face)."""
        return None

    def plain_prompt(self, text: str) -> list[int]:
        """Plain text to continue, after <|endoftext|> as in training."""
        return [self.tokenizer.end_of_text_id] + self.tokenizer.encode(text)

    def token_bytes(self, token_id: int) -> bytes:
        """A control token sampled mid-reply shows as nothing, as llama.cpp shows it."""
        return b"" if token_id in self._control_ids else self.tokenizer.token_bytes(token_id)

    def control_token_name(self, token_id: int) -> str | None:
        """A control token's name (<|end|>), for the inspector; None for an ordinary token."""
        return self._control_names.get(token_id)
