"""The model picker: every model found, with what it is and where it came from,
and a box to add a GGUF file by path."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from chatapp.model_discovery import model_spec
from chatapp.model_listing import model_label
from chatapp.model_registry import ModelRef


def model_option_text(ref: ModelRef) -> Text:
    """Name, label and source, like "llama3.2:3b  Llama 3.2 3B Instruct · Q4_K_M · 2.0 GB  Ollama"."""
    return Text.assemble((ref.name, "bold"), "  ", model_label(ref), "  ", (ref.source, "dim"))


class ModelPickerScreen(ModalScreen[str | None]):
    """Dismisses with a model spec (a name or a path) or None."""

    BINDINGS = [Binding("escape,f4", "dismiss(None)", "Cancel")]

    def __init__(self, models: list[ModelRef], current: str):
        super().__init__()
        self.models, self.current = models, current

    def compose(self):
        with Vertical(classes="dialog wide", id="model-picker"):
            yield Label(f"Models · now: {self.current or 'default'}", classes="title")
            yield OptionList(*[Option(model_option_text(ref), id=model_spec(ref)) for ref in self.models], id="models")
            if not self.models:
                yield Label("No models found. Add a GGUF file below, or train one with `chatapp train`.")
            yield Input(placeholder="Add a GGUF file by path and press Enter", id="add-path")
            yield Label("", id="add-error", classes="field-error")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        path = Path(event.value.strip()).expanduser()
        if not path.is_file() or path.suffix.lower() != ".gguf":
            self.query_one("#add-error", Label).update(f"{path}: not a .gguf file")
            return
        self.dismiss(str(path.resolve()))
