"""The model picker: every model found, and a box to add a GGUF file by path."""

from __future__ import annotations

from pathlib import Path

from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from chatapp.model_discovery import model_spec
from chatapp.model_registry import ModelRef


def model_label(ref: ModelRef) -> str:
    size = f"{ref.size_bytes / 1e6:.1f} MB" if ref.path.exists() else "missing"
    return f"{ref.name}  [{ref.source}, {ref.kind}, {size}]"


class ModelPickerScreen(ModalScreen[str | None]):
    """Dismisses with a model spec (a name or a path) or None."""

    BINDINGS = [Binding("escape,f4", "dismiss(None)", "Cancel")]

    def __init__(self, models: list[ModelRef], current: str):
        super().__init__()
        self.models, self.current = models, current

    def compose(self):
        with Vertical(classes="dialog wide", id="model-picker"):
            yield Label(f"Models · now: {self.current or 'default'}", classes="title")
            yield OptionList(*[Option(model_label(ref), id=model_spec(ref)) for ref in self.models], id="models")
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
