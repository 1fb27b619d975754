"""The model picker: every model found, with what it is and where it came from,
and a box to add a GGUF file by path."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from chatapp.models.listing import model_label
from chatapp.models.registry import DEFAULT_MODEL, ModelNotFound, default_model
from chatapp.models.resolve import model_spec
from chatapp.serving.endpoint import EndpointModel, parse_endpoint_spec
from chatapp.tui.screens.download import DownloadHost, DownloadScreen

if TYPE_CHECKING:
    from chatapp.tui.host import ModelChoice

DOWNLOAD_OPTION = "download:"  # option ids no model spec can be
CANCEL_DOWNLOAD_OPTION = "cancel-download:"


def model_phrase(spec: str | None) -> str:
    """A spec as the banner and the notices say it: "model NAME", "model NAME on URL", "the model on URL"
    (never the internal endpoint:URL#NAME)."""
    if not spec:
        return "the built-in model"
    endpoint = parse_endpoint_spec(spec)
    if endpoint is not None:
        url, model = endpoint
        return f"model {model} on {url}" if model else f"the model on {url}"
    return f"model {spec}"


def model_option_text(ref: ModelChoice) -> Text:
    """Name, label and source, like "llama3.2:3b  Llama 3.2 3B Instruct · Q4_K_M · 2.0 GB  Ollama"."""
    return Text.assemble((ref.name, "bold"), "  ", model_label(ref), "  ", (ref.source, "dim"))


def current_index(models: list[ModelChoice], current: str) -> int | None:
    """Which of the models is the one in use: current is a spec, or "" for the built-in default model.
    A server named without a model gives its first one (as the endpoint engine does)."""
    if not current:
        try:
            default = default_model()
        except ModelNotFound:
            return None
        matches = [i for i, ref in enumerate(models) if getattr(ref, "path", None) == default.path]
    else:
        matches = [i for i, ref in enumerate(models) if current in (model_spec(ref), str(getattr(ref, "path", "")))]
        matches = matches or [i for i, ref in enumerate(models) if ref.name == current]
        endpoint = parse_endpoint_spec(current)
        if not matches and endpoint is not None and endpoint[1] is None:
            matches = [i for i, ref in enumerate(models) if isinstance(ref, EndpointModel) and ref.url == endpoint[0]]
    return matches[0] if matches else None


def current_name(models: list[ModelChoice], current: str, index: int | None) -> str:
    if index is not None:
        return models[index].name
    if not current:
        return DEFAULT_MODEL
    endpoint = parse_endpoint_spec(current)
    if endpoint is not None:
        url, model = endpoint
        return f"{model} on {url}" if model else url
    return Path(current).name if ("/" in current or current.endswith(".gguf")) else current


class ModelPickerScreen(ModalScreen[str | None]):
    """Dismisses with a model spec (a name or a path) or None. Opens on the model in use."""

    BINDINGS = [Binding("escape,f4", "dismiss(None)", "Cancel")]

    def __init__(self, models: list[ModelChoice], current: str):
        """current: the spec of the model in use, "" for the built-in default."""
        super().__init__()
        self.models, self.current = models, current
        self.current_index = current_index(models, current)

    def compose(self):
        with Vertical(classes="dialog wide", id="model-picker"):
            yield Label(f"Models · now: {current_name(self.models, self.current, self.current_index)}", classes="title")
            yield OptionList(
                *[Option(model_option_text(ref), id=model_spec(ref)) for ref in self.models],
                self.download_option(),
                id="models",
            )
            if not self.models:
                yield Label("No models found. Download one, add a GGUF file below, or train one with `chatapp train`.")
            yield Input(placeholder="Add a GGUF file by path and press Enter", id="add-path")
            yield Label("", id="add-error", classes="field-error")

    def on_mount(self) -> None:
        options = self.query_one("#models", OptionList)
        if self.current_index is not None:
            options.highlighted = self.current_index
        options.focus()

    @property
    def host(self) -> DownloadHost:
        return cast("DownloadHost", self.app)

    def download_option(self) -> Option:
        """The last row: download a model, or cancel the download that runs."""
        download = getattr(self.app, "download", None)
        if download is not None:
            return Option(Text(f"Cancel the download of {download.spec}", "yellow"), id=CANCEL_DOWNLOAD_OPTION)
        return Option(Text("Download a model…", "bold green"), id=DOWNLOAD_OPTION)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id == DOWNLOAD_OPTION:
            host = self.host
            self.dismiss(None)
            # pushed by the app: a result callback runs on the one that pushed, and this picker is gone
            self.app.call_later(
                self.app.push_screen, DownloadScreen(), lambda spec: host.start_download(spec) if spec else None
            )
        elif event.option.id == CANCEL_DOWNLOAD_OPTION:
            if self.host.download is not None:
                self.host.download.cancel()
            self.dismiss(None)
        else:
            self.dismiss(event.option.id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        path = Path(event.value.strip()).expanduser()
        if not path.is_file() or path.suffix.lower() != ".gguf":
            self.query_one("#add-error", Label).update(f"{path}: not a .gguf file")
            return
        self.dismiss(str(path.resolve()))
