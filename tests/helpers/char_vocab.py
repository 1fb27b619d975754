"""A stand-in for a model's vocabulary under a chat template (model.text.chat_template.TemplateVocab):
the given control tokens are ids 0, 1, 2, ...; text is one id a character (`text_base` + its code
point), so a prompt's ids spell its text back."""

from __future__ import annotations


class CharVocab:
    def __init__(
        self,
        control: list[str],
        *,
        text_base: int = 1000,
        bos: str | None = None,
        eos: str | None = None,
        silent_controls: bool = True,
        text_tokens: tuple[str, ...] = (),
    ):
        """silent_controls: a control token stands for no text in a reply, as llama.cpp writes it, except
        `text_tokens` (added tokens that are not control tokens, like Qwen3's <think>); False: its name."""
        self.control_tokens = {text: i for i, text in enumerate(control)}
        self.names = {i: text for text, i in self.control_tokens.items()}
        self.text_base = text_base
        self.add_bos = False
        self.bos_id = None if bos is None else self.control_tokens[bos]
        self.eos_id = None if eos is None else self.control_tokens[eos]
        self.silent_controls = silent_controls
        self.text_tokens = set(text_tokens)

    def encode(self, text: str) -> list[int]:
        return [self.text_base + ord(c) for c in text]

    def token_text(self, token_id: int) -> str:
        return self.names.get(token_id) or chr(token_id - self.text_base)

    def token_bytes(self, token_id: int) -> bytes:
        name = self.names.get(token_id)
        if name is not None and self.silent_controls and name not in self.text_tokens:
            return b""
        return self.token_text(token_id).encode()
