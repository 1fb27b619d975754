"""What an empty conversation shows: the model, what it is, and the few keys to start with."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from chatapp.models.registry import DEFAULT_MODEL
from chatapp.tui.keys import NEWLINE_KEY, key_for

START_KEYS = [  # (action in keys.APP_KEYS, what it does here)
    ("settings", "settings: system prompt, temperature"),
    ("models", "another model"),
    ("inspect", "how each token was drawn"),
    ("help", "every key"),
]
DESCRIPTION_WIDTH = 72  # one line at 80 columns, inside the chat's padding
GET_A_MODEL = "For a real model: {key} → Download a model…, or `chatapp pull`"
PERSONAS = "Personas for it: ctrl+p → Preset: hamlet, fool or sonneteer"  # chatapp/builtin/presets/


class Welcome(Static):
    """Short on purpose: at most 10 lines at 80 columns (the model's description is cut to one line)."""

    DEFAULT_CSS = """
    Welcome { height: auto; padding: 1 2; color: $text-muted; }
    """

    def show(self, model_name: str, description: str = "", builtin: bool | None = None) -> None:
        """builtin: whether the model is the built-in one, which gets a line on how to get a real model;
        None: the app's model spec tells ("" or the built-in's name), else the name shown."""
        keys = [f"{key_for(action)} {what}" for action, what in START_KEYS]
        if builtin is None:
            builtin = self.shows_builtin(model_name)
        lines = [
            Content.assemble("Chatting with ", (model_name or "no model yet", "bold")),
            *([Content.styled(_one_line(description, DESCRIPTION_WIDTH), "italic")] if description else []),
            *([Content(GET_A_MODEL.format(key=key_for("models"))), Content(PERSONAS)] if builtin else []),
            Content(""),
            Content(f"Type a message: Enter sends, {NEWLINE_KEY} adds a line."),
            Content(" · ".join(keys[:2])),
            Content(" · ".join(keys[2:])),
        ]
        self.update(Content("\n").join(lines))

    def shows_builtin(self, model_name: str) -> bool:
        try:
            spec = getattr(self.app, "loaded_spec", None)
        except Exception:  # noqa: BLE001 - not in an app (yet): the name tells
            spec = None
        if spec is not None:
            return spec == "" or spec.startswith(DEFAULT_MODEL)  # the built-in folder or its GGUF
        return model_name.startswith(DEFAULT_MODEL) or model_name.startswith("the built-in model")


def _one_line(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"
