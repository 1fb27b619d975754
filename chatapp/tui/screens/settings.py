"""Per-conversation settings: model, backend, system prompt and sampling.

A bad value is refused where it is typed, with the allowed range (from
SamplingParams.validate), and Save stays disabled until every value is good.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, TextArea

from chatapp.settings import SAMPLING_FIELDS, ChatDefaults, check_field

FIELD_HELP = {
    "temperature": "0 is greedy; higher is more random",
    "top_p": "nucleus sampling, in (0, 1]; 1 is off",
    "top_k": "keep the k most likely tokens; 0 is off",
    "min_p": "drop tokens below min_p x the top probability; 0 is off",
    "repetition_penalty": "penalise recent tokens, > 0; 1 is off",
    "max_tokens": "the longest reply, in tokens",
    "seed": "empty: a fresh seed per reply; a number reproduces a reply",
}
BACKENDS = ("auto", "torch", "llama.cpp")


@dataclass
class ConversationSettings:
    chat: ChatDefaults
    model: str  # a model spec; "" is the default model
    backend: str = "auto"


class SettingsScreen(ModalScreen[ConversationSettings | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("ctrl+s", "save", "Save")]

    def __init__(self, current: ConversationSettings, models: list[tuple[str, str]]):
        """models: (label, spec) pairs for the model choice."""
        super().__init__()
        self.current = current
        self.models = models
        self.errors: dict[str, str] = {}

    def compose(self):
        chat = self.current.chat
        with VerticalScroll(classes="dialog wide", id="settings-panel"):
            yield Label("Conversation settings", classes="title")
            yield Label("Model")
            specs = [spec for _, spec in self.models]
            yield Select(self.models, value=self.current.model if self.current.model in specs else Select.NULL,
                         allow_blank=True, prompt="default model", id="model")
            yield Label("Backend")
            yield Select([(b, b) for b in BACKENDS], value=self.current.backend, allow_blank=False, id="backend")
            yield Label("System prompt")
            yield TextArea(chat.system_prompt, id="system_prompt", soft_wrap=True, tab_behavior="focus")
            for name in SAMPLING_FIELDS:
                value = getattr(chat, name)
                yield Label(f"{name.replace('_', ' ')}  ({FIELD_HELP[name]})")
                yield Input("" if value is None else str(value), id=name, classes="sampling")
                yield Label("", id=f"{name}-error", classes="field-error")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def on_input_changed(self, event: Input.Changed) -> None:
        name = event.input.id
        if name not in SAMPLING_FIELDS:
            return
        _, error = check_field(name, event.value.strip())
        if error:
            self.errors[name] = error
        else:
            self.errors.pop(name, None)
        self.query_one(f"#{name}-error", Label).update(error or "")
        event.input.set_class(bool(error), "invalid")
        self.query_one("#save", Button).disabled = bool(self.errors)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def action_save(self) -> None:
        if self.errors:
            self.notify("Fix the values marked in red first", severity="warning")
            return
        values = {name: check_field(name, self.query_one(f"#{name}", Input).value.strip())[0] for name in SAMPLING_FIELDS}
        chat = ChatDefaults(system_prompt=self.query_one("#system_prompt", TextArea).text, **values)
        model = self.query_one("#model", Select).value
        self.dismiss(ConversationSettings(
            chat, "" if model is Select.NULL else str(model), str(self.query_one("#backend", Select).value)))
