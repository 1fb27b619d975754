"""Download a model (F4, then "Download a model…"): pick one of a few small instruct models that suit this
machine, or type a repo on the Hugging Face hub and pick among its quantizations. The download itself
(`Download`) runs in a worker thread through chatapp.models.pull while the chat goes on; a bar above the
input shows it (bytes, speed, time left) and can cancel it; the app opens the model when it is done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from rich.text import Text
from textual import work
from textual.app import App
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, OptionList, ProgressBar
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from chatapp.models.hub_plan import PullError, first_line, offline_mode, plan_pull, safe_token
from chatapp.models.listing import human_size
from chatapp.models.pull import PullCancelled, PullEvent, pull, pulled_bytes_kept
from chatapp.models.suggested import machine_memory, suggested_models

if TYPE_CHECKING:
    from chatapp.models.hub_plan import Plan
    from chatapp.models.suggested import SuggestedModel


class DownloadHost(Protocol):
    """What the download screens read of the app (ChatApp)."""

    download: Download | None

    def start_download(self, spec: str) -> None: ...


# Words for numbers


def memory_words(size: int | None) -> str:
    return "unknown" if size is None else f"{size / 1e9:.1f} GB"


def eta_words(seconds: float | None) -> str:
    if seconds is None:
        return "time left unknown"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s left"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s left"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min left"


def progress_words(data: dict) -> str:
    """ "120 MB of 400 MB · 12.3 MB/s · 23 s left"."""
    done, total = int(data.get("done_bytes", 0)), int(data.get("total_bytes", 0))
    speed = int(data.get("bytes_per_second") or 0)
    parts = [f"{human_size(done)} of {human_size(total)}"]
    parts.append(f"{human_size(speed)}/s" if speed else "measuring speed")
    parts.append(eta_words(data.get("eta_seconds")) if speed else "")
    return " · ".join(p for p in parts if p)


def fits(model: SuggestedModel, memory: int | None) -> bool:
    return memory is None or model.memory_bytes <= memory


def suggestion_text(model: SuggestedModel, memory: int | None) -> Text:
    """ "Qwen3 0.6B  Q8_0 · 639 MB · needs about 1.2 GB  Qwen/Qwen3-0.6B-GGUF"."""
    text = Text.assemble(
        (f"{model.name:<14}", "bold"),
        f"{model.quant:<7} · {human_size(model.size_bytes):>7} · needs about {memory_words(model.memory_bytes)}",
    )
    if not fits(model, memory):
        text.append("  more memory than this machine has", "red")
    return text


def candidate_text(plan: Plan, index: int) -> Text:
    candidate = plan.candidates[index]
    text = Text(candidate.label(), "bold" if candidate is plan.chosen else "")
    if candidate is plan.chosen:
        text.append(f"  {plan.reason}", "green")
    return text


# The screen that chooses what to download


class DownloadScreen(ModalScreen[str | None]):
    """Dismisses with what to pull (REPO:QUANT, or REPO:FILE) or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self) -> None:
        super().__init__()
        self.memory = machine_memory()
        try:
            self.suggested = suggested_models()
        except (OSError, ValueError, KeyError) as error:  # a broken data file: typing a repo still works
            self.suggested, self.suggested_error = [], f"The suggested models could not be read: {first_line(error)}"
        else:
            self.suggested_error = ""
        self.plan: Plan | None = None

    def compose(self):
        with Vertical(classes="dialog wide", id="download"):
            yield Label("Download a model", classes="title")
            yield Label(f"This machine has {memory_words(self.memory)} of memory.", id="machine-memory")
            yield Label("Small instruct models (Enter downloads one):", classes="hint")
            yield OptionList(
                *[
                    Option(suggestion_text(m, self.memory), id=f"suggested-{i}", disabled=not fits(m, self.memory))
                    for i, m in enumerate(self.suggested)
                ],
                id="suggested",
            )
            if self.suggested_error:
                yield Label(self.suggested_error, classes="field-error")
            yield Label(
                "Or a model on the Hugging Face hub, OWNER/NAME[:QUANT] (Enter lists its files):", classes="hint"
            )
            yield Input(placeholder="e.g. Qwen/Qwen3-0.6B-GGUF", id="repo")
            yield Label("", id="download-status")
            yield OptionList(id="quants")

    def on_mount(self) -> None:
        self.query_one("#quants", OptionList).display = False
        self.query_one("#suggested", OptionList).focus()

    def status(self, text: str, error: bool = False) -> None:
        label = self.query_one("#download-status", Label)
        label.update(text)
        label.set_class(error, "field-error")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        option_id = event.option.id or ""
        if event.option_list.id == "suggested":
            self.dismiss(self.suggested[int(option_id.removeprefix("suggested-"))].spec)
        elif event.option_list.id == "quants" and self.plan is not None:
            self.dismiss(self.plan.spec_for(self.plan.candidates[int(option_id.removeprefix("quant-"))]))

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list.id == "suggested" and event.option.id:
            model = self.suggested[int(event.option.id.removeprefix("suggested-"))]
            self.status(f"{model.name}: {model.spec} on the Hugging Face hub")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text:
            self.status("Type a model on the hub, like Qwen/Qwen3-0.6B-GGUF", error=True)
            return
        self.plan = None
        self.query_one("#quants", OptionList).display = False
        self.status(f"Asking the hub about {text}…")
        self.list_files(text)

    @work(thread=True, exclusive=True, group="plan")
    def list_files(self, text: str) -> None:
        try:
            plan = plan_pull(text, None if offline_mode() else safe_token())
        except PullError as error:
            self.app.call_from_thread(self.show_error, text, str(error))
        except Exception as error:  # noqa: BLE001 - one line in the dialog, never a crash
            self.app.call_from_thread(self.show_error, text, first_line(error))
        else:
            self.app.call_from_thread(self.show_plan, text, plan)

    def show_error(self, text: str, error: str) -> None:
        if self.is_mounted and self.query_one("#repo", Input).value.strip() == text:
            self.status(" ".join(error.split()), error=True)

    def show_plan(self, text: str, plan: Plan) -> None:
        if not self.is_mounted or self.query_one("#repo", Input).value.strip() != text:
            return  # the user typed something else meanwhile
        self.plan = plan
        quants = self.query_one("#quants", OptionList)
        quants.clear_options()
        quants.add_options([Option(candidate_text(plan, i), id=f"quant-{i}") for i in range(len(plan.candidates))])
        quants.display = True
        quants.highlighted = plan.candidates.index(plan.chosen)
        quants.focus()
        count = len(plan.candidates)
        self.status(f"{plan.repo}: {count} model file{'s' if count != 1 else ''} (Enter downloads the one chosen)")


# The download, in the background


class DownloadBar(Vertical):
    """Above the input while a download runs: what and a Cancel button; a progress bar and the numbers."""

    class Event(Message):
        def __init__(self, event: PullEvent) -> None:
            super().__init__()
            self.event = event

    class Ended(Message):
        def __init__(self, notice: str, severity: str, spec: str | None) -> None:
            super().__init__()
            self.notice, self.severity, self.spec = notice, severity, spec

    def __init__(self, download: Download) -> None:
        super().__init__(id="download-bar")
        self.download = download

    def compose(self):
        with Horizontal():
            yield Label(f"Downloading {self.download.spec}", id="download-what")
            yield Button("Cancel", id="download-cancel", compact=True)
        with Horizontal():
            yield ProgressBar(total=None, show_eta=False, id="download-progress")
            yield Label("asking the hub…", id="download-numbers")

    def on_mount(self) -> None:
        self.download.start_worker()  # once mounted: the worker's messages need the bar's queue

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.download.cancel()

    def on_download_bar_event(self, message: DownloadBar.Event) -> None:
        event = message.event
        numbers = self.query_one("#download-numbers", Label)
        if event.kind == "plan":
            self.query_one("#download-what", Label).update(f"Downloading {event.message}".split(", ")[0])
        elif event.kind == "progress" and not self.download.cancelled:
            bar = self.query_one("#download-progress", ProgressBar)
            bar.update(total=max(int(event.data["total_bytes"]), 1), progress=int(event.data["done_bytes"]))
            numbers.update(progress_words(event.data))
        elif event.kind in ("verified", "checked"):
            numbers.update(event.message)

    def on_download_bar_ended(self, message: DownloadBar.Ended) -> None:
        self.app.notify(message.notice, severity=message.severity, timeout=10)  # type: ignore[arg-type]
        self.download.finished(message.spec)
        self.remove()


class Download:
    """One download: `pull` in a worker thread; what it reports goes to the bar as messages (posting is
    thread-safe and never waits for the UI, so a closing app cannot hold the thread)."""

    def __init__(self, app: App, spec: str, finished: Callable[[str | None], None]) -> None:
        """finished(spec): called on the UI thread at the end, with the spec that names the model when it is
        ready, None when the download failed or was cancelled (the notice has said why)."""
        self.app, self.spec, self.finished = app, spec, finished
        self.cancel_event = threading.Event()
        self.bar = DownloadBar(self)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def start(self, parent: Widget, before: Widget | str | None = None) -> None:
        """Show the bar in `parent`; the download starts when it is mounted."""
        parent.mount(self.bar, before=before)

    def start_worker(self) -> None:
        self.app.run_worker(self.run, thread=True, group="download", name=f"download {self.spec}", exit_on_error=False)

    def cancel(self) -> None:
        """Stop at the next chunk, keeping what arrived."""
        self.cancel_event.set()
        if self.bar.is_mounted:
            self.bar.query_one("#download-numbers", Label).update("cancelling…")

    def run(self) -> None:
        worker = get_current_worker()

        def on_event(event: PullEvent) -> None:
            if worker.is_cancelled:  # the app is closing
                self.cancel_event.set()
            self.bar.post_message(DownloadBar.Event(event))

        try:
            result = pull(self.spec, on_event=on_event, cancel=self.cancel_event)
        except PullCancelled:
            kept = pulled_bytes_kept(self.spec)
            kept_words = f" ({human_size(kept)} kept)" if kept else ""
            ended = DownloadBar.Ended(
                f"Download of {self.spec} cancelled{kept_words}: download it again to go on from there", "warning", None
            )
        except PullError as error:
            ended = DownloadBar.Ended(f"Could not download {self.spec}: {error}", "error", None)
        except Exception as error:  # noqa: BLE001 - one line in the app, never a crash
            ended = DownloadBar.Ended(f"Could not download {self.spec}: {first_line(error)}", "error", None)
        else:
            ended = DownloadBar.Ended(
                f"{result.spec} is downloaded and checked; opening it", "information", result.spec
            )
        self.bar.post_message(ended)
