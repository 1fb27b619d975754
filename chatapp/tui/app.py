"""The chat app: it loads the model, holds the history store and the settings,
and routes the rest to the chat screen (screens/chat.py), which owns the open
conversation and asks the app for the engine.

Models load in a worker thread, so the first frame never waits for torch.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.screen import Screen
from textual.widgets import TextArea

from chatapp.history import HistoryError, HistoryStore, HistoryUnavailable, move_aside
from model.inference.backend import Backend
from chatapp.settings import Settings, SettingsError, load_settings, save_value
from chatapp.tui.search_palette import HistorySearch
from chatapp.tui.keys import APP_KEYS
from chatapp.tui.screens.chat import APP_ACTIONS, ChatScreen
from chatapp.tui.screens.help import HelpScreen
from chatapp.tui.screens.history_problem import HistoryProblemScreen


Opener = Callable[[str, str, str], "Backend"]  # (spec, backend kind, device) -> an open backend


def model_opener(context: int | None = None, api_key: str | None = None, compile: str | None = None) -> Opener:
    """The real opener (chatapp.models.opening.open_model), with the command line's options."""
    def open_engine(spec: str, backend: str, device: str) -> Backend:
        from chatapp.models.opening import open_model

        return open_model(spec, backend, device, context=context, compile=compile, api_key=api_key).backend

    return open_engine


class ChatApp(App):
    CSS_PATH = "chatapp.tcss"
    TITLE = "chatapp"
    COMMANDS = App.COMMANDS | {HistorySearch}

    def __init__(self, model_spec: str | None = None, backend: str = "auto", device: str = "auto", *,
                 engine=None, store: HistoryStore | None = None, settings: Settings | None = None,
                 opener: Opener | None = None):
        """engine: an already open backend (tests); otherwise the chat screen's model is opened in a worker thread."""
        super().__init__()
        self.settings = settings or load_settings()
        self.default_spec = model_spec or self.settings.model
        self.backend_kind = backend if backend != "auto" else self.settings.backend
        self.device, self.opener = device, opener or model_opener()
        self.api_key_for_endpoints: str | None = None  # the --api-key given with --endpoint, for listing servers' models
        self.engine = engine
        self.loaded_spec: str | None = self.default_spec if engine is not None else None
        self.load_error: str | None = None
        self.model_description = ""
        self.compile_watch = None  # a timer that shows the torch engine's compile in the header while it runs
        self._store = store
        self.history_problem: HistoryUnavailable | None = None
        self.history_notice: str | None = None  # shown in the banner while the history is not saved
        self.chat = ChatScreen()

    def get_default_screen(self) -> ChatScreen:
        return self.chat

    @property
    def store(self) -> HistoryStore:
        """The history; a file that cannot be used leaves an in-memory one until the user decides."""
        if self._store is None:
            try:
                self._store = HistoryStore()
            except HistoryUnavailable as problem:
                self.history_problem = problem
                self.history_notice = f"Not saving this session: {problem.reason}"
                self._store = HistoryStore(":memory:")
        return self._store

    def on_mount(self) -> None:
        store = self.store  # opened first: a history file that cannot be used is asked about before anything else
        if self.history_problem is not None:
            self.push_screen(HistoryProblemScreen(self.history_problem), self.history_problem_answered)
        if self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        self.theme_changed_signal.subscribe(self, self.remember_theme)
        for notice in self.settings.notices:
            self.notify(notice, severity="warning", timeout=10)
        if store.recovered:
            self.notify(f"{store.recovered} reply(s) were interrupted when the app last closed; "
                        "they are kept, marked as interrupted", timeout=8)

    async def history_problem_answered(self, answer: str | None) -> None:
        problem = self.history_problem
        if answer == "quit":
            self.exit(return_code=1, message=f"chatapp: {problem.reason}")
            return
        if answer == "move-aside":
            try:
                moved_to = move_aside(problem.path)
                fresh = HistoryStore(problem.path)
            except (OSError, HistoryError) as error:
                self.notify(f"Could not start a fresh history: {getattr(error, 'reason', error)}", severity="error")
            else:
                self._store, self.history_problem, self.history_notice = fresh, None, None
                await self.chat.history_replaced()
                self.notify(f"The old history is kept as {moved_to}; this is a fresh one", timeout=10)
        self.chat.model_changed()

    def _handle_exception(self, error: Exception) -> None:
        # A history or settings write that fails (disk full, file gone) in any handler is a notice,
        # not the end of the app: what the user was doing is still on screen.
        if isinstance(error, (HistoryError, SettingsError)):
            self.notify(getattr(error, "reason", None) or str(error), severity="error", timeout=15)
            return
        super()._handle_exception(error)

    def remember_theme(self, theme) -> None:
        if self.settings.path is not None:
            save_value(self.settings.path, "app", "theme", theme.name)

    # --- models ---

    def start_loading(self, spec: str, backend: str) -> None:
        self.engine, self.loaded_spec, self.load_error = None, spec, None
        self.chat.model_changed()
        self.load_model(spec, backend)

    @work(thread=True, exclusive=True, group="load")
    def load_model(self, spec: str, backend: str) -> None:
        try:
            engine = self.opener(spec, backend, self.device)
        except Exception as error:  # noqa: BLE001 - shown in the app, which keeps running
            self.call_from_thread(self.model_failed, spec, f"{error}")
            return
        self.call_from_thread(self.model_ready, spec, engine, describe_model(spec))

    def model_ready(self, spec: str, engine, description: str = "") -> None:
        if spec != self.loaded_spec:
            return  # a later choice replaced this one
        self.engine, self.model_description = engine, description
        self.show_engine_title()
        if getattr(engine, "compile_state", "off") == "compiling" and self.compile_watch is None:
            self.compile_watch = self.set_interval(1.0, self.show_engine_title)
        self.chat.model_changed()

    def show_engine_title(self) -> None:
        """The model and its engine in the header, with the torch engine's compile while it runs."""
        engine = self.engine
        if engine is None:
            return
        state = getattr(engine, "compile_state", "off")
        notes = {"compiling": " · compiling its decode step (replies run meanwhile)", "on": " · compiled"}
        self.sub_title = f"{engine.model_name} · {engine.name}" + notes.get(state, "")
        if state != "compiling" and self.compile_watch is not None:
            self.compile_watch.stop()
            self.compile_watch = None

    def model_failed(self, spec: str, error: str) -> None:
        self.load_error = f"The model {spec or 'built-in'} could not be loaded: {error}"
        self.chat.model_changed()
        self.notify(self.load_error, severity="error", timeout=10)

    def model_title(self) -> str:
        """The model's name and where it runs, for the welcome text."""
        if self.engine is None:
            return f"{self.loaded_spec or 'the built-in model'} (loading…)"
        return (f"{self.engine.model_name} · {self.engine.name} · "
                f"context {self.engine.context_length:,} tokens")

    def model_choices(self):
        """Local models, then what each known server offers (a server that does not answer is left out)."""
        from chatapp.serving.endpoint import EndpointError, endpoint_models, parse_endpoint_spec
        from chatapp.models.discovery import discover_models

        servers = list(self.settings.endpoints)
        current = parse_endpoint_spec(self.default_spec)
        if current and current[0] not in servers:
            servers.append(current[0])
        remote = []
        for url in servers:
            try:
                remote += endpoint_models(url, self.api_key_for_endpoints)
            except EndpointError:
                pass
        return discover_models(self.settings.extra_paths) + remote

    def remember_endpoint(self, url: str) -> None:
        """A server chatted with is listed in the model picker from then on."""
        if url not in self.settings.endpoints:
            self.settings.endpoints.append(url)
            if self.settings.path is not None:
                save_value(self.settings.path, "model", "endpoints", self.settings.endpoints)

    def remember_model_path(self, spec: str) -> None:
        """A model the picker was given by path is listed from then on."""
        choices = self.model_choices()
        known = {str(ref.path) for ref in choices} | {ref.name for ref in choices}
        if spec not in known and spec not in self.settings.extra_paths:
            self.settings.extra_paths.append(spec)
            if self.settings.path is not None:
                save_value(self.settings.path, "model", "extra_paths", self.settings.extra_paths)

    # --- the App's own actions; the chat screen has the others ---

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        await self.chat.stop_and_wait()
        self.chat.save_unsaved()
        self.exit()

    async def action_stop_or_quit(self) -> None:
        """Ctrl+C: copies a selection in the input, stops a streaming reply, and quits only when nothing streams."""
        focused = self.focused
        if isinstance(focused, TextArea) and focused.selected_text:
            focused.action_copy()
        elif self.chat.action_stop():
            self.notify("Stopped the reply (Ctrl+C again quits)")
        else:
            await self.action_quit()

    def check_action(self, action: str, parameters) -> bool | None:
        # help is one of the chat screen's keys: like them, it does nothing behind a dialog
        return action not in APP_ACTIONS or self.screen is self.chat

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key, action, description, _ in APP_KEYS:
            target = self if action in APP_ACTIONS else self.chat
            yield SystemCommand(description, f"{description} ({key})", partial(target.run_action, action))


def describe_model(spec: str) -> str:
    """One line on what the model is (its config's description, or its GGUF label); "" if unknown."""
    from chatapp.serving.endpoint import parse_endpoint_spec

    if parse_endpoint_spec(spec):
        return "a model on a server: chatapp sends it your messages"
    try:
        from chatapp.models.listing import model_label
        from chatapp.models.resolve import resolve_model
        from model.network.model_folder import read_config

        ref = resolve_model(spec or None)
        if ref.kind == "folder":
            return str(read_config(ref.path).get("description", ""))
        return model_label(ref)
    except Exception:  # noqa: BLE001 - a description is a nicety; the model itself loaded
        return ""


def run_app(model_spec: str | None = None, backend: str = "auto", device: str = "auto", context: int | None = None,
            endpoint: str | None = None, api_key: str | None = None, compile: str = "auto") -> int:
    """`chatapp` and `chatapp chat`: open the app; returns the exit code."""
    app = ChatApp(model_spec, backend, device, opener=model_opener(context, api_key, compile))
    if endpoint:
        from chatapp.serving.endpoint import api_base, endpoint_spec

        app.default_spec = endpoint_spec(endpoint, model_spec)
        app.api_key_for_endpoints = api_key
        app.remember_endpoint(api_base(endpoint))
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    import sys

    sys.exit(run_app(sys.argv[1] if len(sys.argv) > 1 else None))
