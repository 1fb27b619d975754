"""The chat app: it loads the model, holds the history store and the settings,
and routes the rest to the chat screen (screens/chat.py), which owns the open
conversation and asks the app for the engine.

Models load in a worker thread, so the first frame never waits for torch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING

from textual import work
from textual.app import App, SystemCommand
from textual.dom import DOMNode
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import TextArea

from chatapp.history import HistoryError, HistoryStore, HistoryUnavailable, move_aside
from chatapp.models.opening import CacheLimits, set_session_cache
from chatapp.models.registry import ModelRef
from chatapp.settings import Settings, SettingsError, load_settings, save_value, save_values
from chatapp.tui.failures import failures_as_notices, notifies_failures
from chatapp.tui.keys import APP_KEYS
from chatapp.tui.preset_palette import PresetCommands
from chatapp.tui.screens.chat import APP_ACTIONS, ChatScreen
from chatapp.tui.screens.download import Download
from chatapp.tui.screens.help import HelpScreen
from chatapp.tui.screens.history_problem import HistoryProblemScreen
from chatapp.tui.screens.models import model_phrase
from chatapp.tui.search_palette import HistorySearch
from chatapp.tui.terminal_watch import hung_up, terminal_fd
from chatapp.tui.widgets.messages import counted
from model.inference.backend import Backend

if TYPE_CHECKING:
    from textual.actions import ActionParseResult
    from textual.theme import Theme

    from chatapp.presets import Preset
    from chatapp.tui.host import ChatHost, ModelChoice

Opener = Callable[[str, str, str], Backend]  # (spec, backend kind, device) -> an open backend
NARROW_WIDTH = 72  # columns: below it the narrow layout (the CSS of ChatApp)
JUST_ENDED_S = 1.0  # Ctrl+C this soon after a reply ended (or was stopped) asks again before quitting


class ModelOpener:
    """The real opener (chatapp.models.opening.open_model), with the command line's options. It keeps a
    llama.cpp worker started ahead of need: for the GGUF file the app opens first (prepare, called before
    Textual starts its threads, forks one), then after each model opened, for the next (an F4 switch)."""

    def __init__(self, context: int | None = None, api_key: str | None = None, compile: str | None = None):
        self.context, self.api_key, self.compile = context, api_key, compile

    def prepare(self, spec: str, backend: str) -> None:
        """For a GGUF file named by path: a worker forked now, told (from a thread: the file is checked
        first) to load the file, while Textual starts; the first load_model takes it, loading or loaded."""
        from chatapp.models.opening import start_spare_loading, start_spare_worker

        start_spare_worker(spec)
        if backend != "torch":
            threading.Thread(target=start_spare_loading, args=(spec, self.context), daemon=True).start()

    def __call__(self, spec: str, backend: str, device: str) -> Backend:
        from chatapp.models.opening import open_model, start_spare_worker
        from chatapp.serving.endpoint import parse_endpoint_spec

        opened = open_model(spec, backend, device, context=self.context, compile=self.compile, api_key=self.api_key)
        if parse_endpoint_spec(spec) is None:  # a local model: the next may be a GGUF file
            threading.Thread(target=start_spare_worker, name="spare-llama-worker", daemon=True).start()
        return opened.backend


def model_opener(context: int | None = None, api_key: str | None = None, compile: str | None = None) -> Opener:
    return ModelOpener(context, api_key, compile)


class ChatApp(App[None]):
    CSS_PATH = "chatapp.tcss"
    TITLE = "chatapp"
    COMMANDS = App.COMMANDS | {HistorySearch, PresetCommands}
    # Under NARROW_WIDTH columns every screen has the class -narrow: the sidebar folds away (Ctrl+B
    # still shows it), the inspector stacks its tokens above the candidates, so that every column fits,
    # and the footer is as compact as Textual's own compact one (keys.py orders the keys that matter first).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW_WIDTH, "-wide")]
    CSS = """
    Screen.-narrow #sidebar { display: none; }
    Screen.-narrow .dialog.wide { width: 100%; height: 100%; padding: 0 1; }
    Screen.-narrow #inspector Horizontal { layout: vertical; }
    Screen.-narrow #inspector #tokens { width: 100%; height: 5; }
    Screen.-narrow #inspector #step { width: 100%; }
    Screen.-narrow #inspector .hint { display: none; }
    Screen.-narrow FooterKey { margin-right: 1; }
    Screen.-narrow FooterKey .footer-key--key { padding: 0; }
    Screen.-narrow FooterKey .footer-key--description { padding: 0 0 0 1; }
    Screen.-narrow FooterKey.-command-palette { padding-right: 0; margin-right: 0; }
    """

    def __init__(
        self,
        model_spec: str | None = None,
        backend: str = "auto",
        device: str = "auto",
        *,
        engine: Backend | None = None,
        store: HistoryStore | None = None,
        settings: Settings | None = None,
        opener: Opener | None = None,
        preset: Preset | None = None,
    ):
        """engine: an already open backend (tests); otherwise the chat screen's model is opened in a worker thread.
        preset: `chatapp chat --preset NAME`: the app starts in a new conversation with its settings."""
        super().__init__()
        self.settings = settings or load_settings()
        set_session_cache(self.settings.cache)  # what the models opened here may keep of recent prompts
        self.start_preset = preset
        self.default_spec: str = model_spec or (preset.model if preset else "") or self.settings.model
        self.backend_kind: str = backend if backend != "auto" else self.settings.backend
        self.device, self.opener = device, opener or model_opener()
        if engine is None and isinstance(self.opener, ModelOpener) and self.default_spec:
            self.opener.prepare(self.default_spec, self.backend_kind)  # forked while this is one thread
        self.api_key_for_endpoints: str | None = None  # --endpoint's --api-key, for listing servers' models
        self.engine: Backend | None = engine
        self.loaded_spec: str | None = self.default_spec if engine is not None else None
        self.loaded_backend: str = self.backend_kind  # the backend kind loaded_spec was opened with
        self.load_error: str | None = None
        self.model_description = ""
        self.compile_watch: Timer | None = None  # shows the torch engine's compile in the header while it runs
        self._store = store
        self.history_problem: HistoryUnavailable | None = None
        self.history_notice: str | None = None  # shown in the banner while the history is not saved
        self.download: Download | None = None  # the model downloading in the background (F4 → Download)
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
        terminal = terminal_fd()
        if terminal is not None:
            self.set_interval(1.0, partial(self.quit_if_hung_up, terminal))
        if self.history_problem is not None:
            self.push_screen(HistoryProblemScreen(self.history_problem), self.history_problem_answered)
        if self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        self.theme_changed_signal.subscribe(self, self.remember_theme)
        for notice in self.settings.notices:
            self.notify(notice, severity="warning", timeout=10)
        if store.recovered:
            self.notify(
                f"{counted(store.recovered, 'reply', 'replies')} {'was' if store.recovered == 1 else 'were'} "
                "interrupted when the app last closed: kept, marked as interrupted",
                timeout=8,
            )

    @notifies_failures
    async def history_problem_answered(self, answer: str | None) -> None:
        problem = self.history_problem
        if problem is None:
            return
        if answer == "quit":
            self.exit(return_code=1, message=f"chatapp: {problem.reason}")
            return
        if answer == "move-aside" and problem.path is not None:
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

    async def run_action(
        self,
        action: str | ActionParseResult,
        default_namespace: DOMNode | None = None,
        namespaces: Mapping[str, DOMNode] | None = None,
    ) -> bool:
        """Every action (a key, the command palette): a history or settings write that fails in it is a
        notice, not the end of the app (failures.py)."""
        with failures_as_notices(self):
            return await super().run_action(action, default_namespace, namespaces)
        return True

    @notifies_failures
    def remember_theme(self, theme: Theme) -> None:
        if self.settings.path is not None:
            save_value(self.settings.path, "app", "theme", theme.name)

    async def open_conversation(self, conversation_id: int, message_id: int | None = None) -> None:
        """Show a conversation (the history search opens its hits with this), at a message when given."""
        with failures_as_notices(self):
            await self.chat.open_conversation(conversation_id, message_id)
        self.chat.prompt.focus()

    # --- models ---

    def start_loading(self, spec: str, backend: str) -> None:
        self.engine, self.loaded_spec, self.loaded_backend, self.load_error = None, spec, backend, None
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

    def model_ready(self, spec: str, engine: Backend, description: str = "") -> None:
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
        threads = getattr(engine, "threads", None)  # (decode, prompt) for the local engines
        shown_threads = f" · {threads[0]}/{threads[1]} threads" if threads else ""
        self.sub_title = f"{engine.model_name} · {engine.name}{shown_threads}" + notes.get(state, "")
        if state != "compiling" and self.compile_watch is not None:
            self.compile_watch.stop()
            self.compile_watch = None

    def model_failed(self, spec: str, error: str) -> None:
        phrase = model_phrase(spec)
        self.load_error = f"{phrase[:1].upper()}{phrase[1:]} could not be loaded: {error}"
        self.chat.model_changed()
        self.notify(self.load_error, severity="error", timeout=10)

    def model_title(self) -> str:
        """The model's name and where it runs, for the welcome text."""
        if self.engine is None:
            return f"{model_phrase(self.loaded_spec)} ({'not loaded' if self.load_error else 'loading…'})"
        return f"{self.engine.model_name} · {self.engine.name} · context {self.engine.context_length:,} tokens"

    def apply_threads(self, threads: int) -> None:
        """The settings panel's CPU threads (0: automatic): kept in settings.toml, and the current model
        reopened with them (after the reply, if one is streaming: then with the next model loaded)."""
        from chatapp.models.opening import Threads, session_threads, set_session_threads

        self.settings.threads = threads
        set_session_threads(Threads(threads or None, session_threads().batch))
        try:
            if self.settings.path is not None:
                save_value(self.settings.path, "model", "threads", threads)
        except SettingsError as error:
            self.notify(f"CPU threads apply to this session only: {error}", severity="error", timeout=10)
        if self.chat.job is not None:
            self.notify("CPU threads change when the model next loads (a reply is streaming)")
        elif self.loaded_spec is not None:
            self.start_loading(self.loaded_spec, self.loaded_backend)

    def apply_cache_limits(self, limits: CacheLimits) -> None:
        """The settings panel's limits of the saved prompts ([cache]): kept in settings.toml, and given to the
        open model and those opened from now on (while a reply streams: to the next model loaded)."""
        from chatapp.models.opening import apply_cache_limits

        self.settings.cache = limits
        set_session_cache(limits)
        try:
            if self.settings.path is not None:
                save_values(self.settings.path, "cache", {"memory_mb": limits.memory_mb, "disk_mb": limits.disk_mb})
        except SettingsError as error:
            self.notify(f"The cache limits apply to this session only: {error}", severity="error", timeout=10)
        if self.engine is None:
            return
        if self.chat.job is not None or not apply_cache_limits(self.engine, limits):
            self.notify("The cache limits apply when the model next loads (a reply is streaming)")

    def model_choices(self) -> list[ModelChoice]:
        """Local models, then what each known server offers (a server that does not answer is left out)."""
        from chatapp.models.discovery import discover_models
        from chatapp.serving.endpoint import EndpointError, endpoint_models, parse_endpoint_spec

        servers = list(self.settings.endpoints)
        current = parse_endpoint_spec(self.default_spec)
        if current and current[0] not in servers:
            servers.append(current[0])
        choices: list[ModelChoice] = list(discover_models(self.settings.extra_paths))
        for url in servers:
            try:
                choices += endpoint_models(url, self.api_key_for_endpoints)
            except EndpointError:
                pass
        return choices

    def remember_endpoint(self, url: str) -> None:
        """A server chatted with is listed in the model picker from then on."""
        if url not in self.settings.endpoints:
            self.settings.endpoints.append(url)
            if self.settings.path is not None:
                save_value(self.settings.path, "model", "endpoints", self.settings.endpoints)

    def remember_model_path(self, spec: str, choices: list[ModelChoice] | None = None) -> None:
        """A model the picker was given by path is listed from then on (a server's model is listed by its
        server, a listed model already is). choices: the models the picker showed, if at hand."""
        from chatapp.models.resolve import model_spec
        from chatapp.serving.endpoint import parse_endpoint_spec

        endpoint = parse_endpoint_spec(spec)
        if endpoint is not None:
            self.remember_endpoint(endpoint[0])
            return
        if spec.lower().endswith(".gguf"):
            from chatapp.models.discovery import remember_path

            remember_path(spec)  # `chatapp models` lists it too
        choices = self.model_choices() if choices is None else choices
        known = {model_spec(ref) for ref in choices} | {ref.name for ref in choices}
        known |= {str(ref.path) for ref in choices if isinstance(ref, ModelRef)}
        if spec not in known and spec not in self.settings.extra_paths:
            self.settings.extra_paths.append(spec)
            if self.settings.path is not None:
                save_value(self.settings.path, "model", "extra_paths", self.settings.extra_paths)

    # --- downloads (F4 → "Download a model…"; screens/download.py) ---

    def start_download(self, spec: str) -> None:
        """Pull `spec` in the background, its progress above the input; the model opens when it is done."""
        if self.download is not None:
            self.notify(f"{self.download.spec} is downloading: cancel it first (F4)", severity="warning")
            return
        self.download = Download(self, spec, self.download_finished)
        self.download.start(self.chat.query_one("#main"), before="#context")

    @notifies_failures
    def download_finished(self, spec: str | None) -> None:
        """spec: the downloaded model, opened in the conversation in view as if picked with F4 (after the
        reply, if one streams); None: the download failed or was cancelled."""
        self.download = None
        chat, conversation = self.chat, self.chat.conversation
        if not spec or conversation is None:
            return
        self.store.save_settings(conversation.id, {**conversation.settings, "model": spec})
        chat.conversation = self.store.conversation(conversation.id)
        if chat.job is None:
            chat.load_wanted_model()

    # --- the App's own actions; the chat screen has the others ---

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    async def quit_if_hung_up(self, terminal: int) -> None:
        """Its terminal closed without a SIGHUP reaching the app (chatapp/tui/terminal_watch.py): quit as
        Ctrl+Q does, the running reply stopped and saved."""
        if hung_up(terminal):
            await self.action_quit()

    async def action_quit(self) -> None:
        if self.download is not None:
            self.download.cancel()  # what arrived is kept for the next try
        await self.chat.stop_and_wait()
        self.chat.save_unsaved()
        self.chat.claims.release_all()
        self.exit()

    async def action_stop_or_quit(self) -> None:
        """Ctrl+C: copies a selection in the input, stops a streaming reply, and quits only when nothing streams.

        Keys are handled in order, so a message sent with Enter just before is saved and its reply started
        before this runs: Ctrl+C then stops that reply. A Ctrl+C that comes right after a reply ended (by
        itself, or stopped with Esc) asks again rather than quit: it was meant for the reply."""
        focused = self.focused
        chat = self.chat
        if isinstance(focused, TextArea) and focused.selected_text:
            focused.action_copy()
        elif chat.action_stop():
            chat.quit_armed = True
            self.notify("Stopped the reply (Ctrl+C again quits)")
        elif not chat.quit_armed and time.monotonic() - chat.reply_ended_at < JUST_ENDED_S:
            chat.quit_armed = True
            self.notify("The reply had just ended (Ctrl+C again quits)")
        else:
            await self.action_quit()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # help is one of the chat screen's keys: like them, it does nothing behind a dialog
        return action not in APP_ACTIONS or self.screen is self.chat

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key, action, description, _ in APP_KEYS:
            target = self if action in APP_ACTIONS else self.chat
            yield SystemCommand(description, f"{description} ({key})", partial(target.run_action, action))


if TYPE_CHECKING:
    _a_chat_host: type[ChatHost] = ChatApp  # mypy checks here that the app gives the screens what they read


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


def run_app(
    model_spec: str | None = None,
    backend: str = "auto",
    device: str = "auto",
    context: int | None = None,
    endpoint: str | None = None,
    api_key: str | None = None,
    compile: str = "auto",
    preset: Preset | None = None,
) -> int:
    """`chatapp` and `chatapp chat`: open the app; returns the exit code."""
    app = ChatApp(model_spec, backend, device, opener=model_opener(context, api_key, compile), preset=preset)
    if endpoint:
        from chatapp.serving.endpoint import api_base, endpoint_spec

        app.default_spec = endpoint_spec(endpoint, model_spec)
        app.api_key_for_endpoints = api_key
        try:
            app.remember_endpoint(api_base(endpoint))
        except SettingsError as error:  # the app still runs; it says so once it is up
            app.settings.notices.append(str(error))
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    import sys

    sys.exit(run_app(sys.argv[1] if len(sys.argv) > 1 else None))
