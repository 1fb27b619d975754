"""The chat app: a sidebar of conversations, the conversation, the input, the context bar.

The engine's generator runs in a worker thread (generation.ReplyJob) that saves
the reply as it grows; the UI only shows what it is sent. Models load in a
worker thread too, so the first frame never waits for torch.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Header, Static

from chatapp.history import NOT_SENT_TO_MODEL, HistoryStore, Status, StoredConversation, StoredMessage
from chatapp.settings import ChatDefaults, Settings, load_settings, save_value
from chatapp.tui.generation import ReplyDone, ReplyJob, ReplyPiece
from chatapp.tui.keys import APP_KEYS, app_bindings
from chatapp.tui.actions import ChatActions
from chatapp.tui.widgets.context_bar import ContextBar
from chatapp.tui.widgets.messages import AssistantMessage, ChatLog, ChatMessage, UserMessage
from chatapp.tui.widgets.prompt import PromptInput
from chatapp.tui.widgets.sidebar import ConversationSidebar
from model.inference.backend import EngineBusy
from model.text.chat_format import Message

RENDER_FIRST = 40  # messages mounted when a conversation opens; earlier ones on request
APP_ACTIONS = {action for _, action, _, _ in APP_KEYS}


def open_model(spec: str, backend: str, device: str, context: int | None = None):
    """The real opener: resolve a model spec and open its backend (lazy imports: GGUF never imports torch)."""
    from chatapp.backends import open_backend
    from chatapp.model_registry import resolve_model

    return open_backend(resolve_model(spec or None), backend, device, context=context)


class ChatApp(ChatActions, App):
    CSS_PATH = "chatapp.tcss"
    TITLE = "chatapp"
    BINDINGS = app_bindings()

    def __init__(self, model_spec: str | None = None, backend: str = "auto", device: str = "auto", *,
                 engine=None, store: HistoryStore | None = None, settings: Settings | None = None,
                 opener: Callable = open_model):
        """engine: an already open backend (tests); otherwise model_spec is opened in a worker thread."""
        super().__init__()
        self.settings = settings or load_settings()
        self.default_spec = model_spec or self.settings.model
        self.backend_kind = backend if backend != "auto" else self.settings.backend
        self.device, self.opener = device, opener
        self.engine = engine
        self.loaded_spec: str | None = self.default_spec if engine is not None else None
        self.load_error: str | None = None
        self._store = store
        self.conversation: StoredConversation | None = None
        self.job: ReplyJob | None = None
        self.hidden_messages: list[StoredMessage] = []

    # --- layout and start ---

    def compose(self):
        yield Header()
        with Horizontal():
            yield ConversationSidebar(id="sidebar")
            with Vertical(id="main"):
                yield Static("", id="banner")
                yield ChatLog(id="log")
                yield ContextBar("", id="context")
                yield PromptInput(id="prompt")
        yield Footer()

    @property
    def main_screen(self) -> Screen:
        return self.screen_stack[0]

    @property
    def log_view(self) -> ChatLog:
        return self.main_screen.query_one(ChatLog)

    @property
    def prompt(self) -> PromptInput:
        return self.main_screen.query_one(PromptInput)

    @property
    def store(self) -> HistoryStore:
        if self._store is None:
            self._store = HistoryStore()
        return self._store

    async def on_mount(self) -> None:
        if self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        self.theme_changed_signal.subscribe(self, self.remember_theme)
        for notice in self.settings.notices:
            self.notify(notice, severity="warning", timeout=10)
        if self.store.recovered:
            self.notify(f"{self.store.recovered} reply(s) were interrupted when the app last closed; "
                        "they are kept, marked as interrupted", timeout=8)
        self.prompt.earlier_prompts = self.store.user_prompts()
        latest = self.store.conversations()
        await self.open_conversation(latest[0].id if latest else self.new_conversation().id)
        self.prompt.focus()
        if self.engine is None:
            self.start_loading(self.wanted_spec())

    def remember_theme(self, theme) -> None:
        if self.settings.path is not None:
            save_value(self.settings.path, "app", "theme", theme.name)

    # --- models ---

    def wanted_spec(self) -> str:
        settings = self.conversation.settings if self.conversation else {}
        return settings.get("model") or self.default_spec

    def start_loading(self, spec: str) -> None:
        self.engine, self.loaded_spec, self.load_error = None, spec, None
        self.show_banner(f"Loading model {spec or 'built-in'}…")
        self.load_model(spec, self.backend_for_conversation())

    def backend_for_conversation(self) -> str:
        settings = self.conversation.settings if self.conversation else {}
        return settings.get("backend") or self.backend_kind

    @work(thread=True, exclusive=True, group="load")
    def load_model(self, spec: str, backend: str) -> None:
        try:
            engine = self.opener(spec, backend, self.device)
        except Exception as error:  # noqa: BLE001 - shown in the app, which keeps running
            self.call_from_thread(self.model_failed, spec, f"{error}")
            return
        self.call_from_thread(self.model_ready, spec, engine)

    def model_ready(self, spec: str, engine) -> None:
        if spec != self.loaded_spec:
            return  # a later choice replaced this one
        self.engine = engine
        self.show_banner("")
        self.sub_title = f"{engine.model_name} · {engine.name}"
        self.update_context()

    def model_failed(self, spec: str, error: str) -> None:
        self.load_error = f"The model {spec or 'built-in'} could not be loaded: {error}"
        self.show_banner(self.load_error + "  (F4 picks another model)", error=True)
        self.notify(self.load_error, severity="error", timeout=10)

    def show_banner(self, text: str, error: bool = False) -> None:
        banner = self.main_screen.query_one("#banner", Static)
        banner.update(text)
        banner.display = bool(text)
        banner.set_class(error, "error")

    # --- conversations ---

    def new_conversation(self) -> StoredConversation:
        defaults = {"chat": self.settings.chat.to_dict(), "model": "", "backend": ""}
        return self.store.create_conversation(defaults)

    def refresh_sidebar(self) -> None:
        text_filter = self.main_screen.query_one("#filter").value
        current = self.conversation.id if self.conversation else None
        self.main_screen.query_one(ConversationSidebar).show(self.store.conversations(text_filter), current)

    async def open_conversation(self, conversation_id: int) -> None:
        """Show a conversation, newest messages first: earlier ones mount in chunks on request."""
        self.conversation = self.store.conversation(conversation_id)
        messages = self.store.messages(conversation_id)
        await self.log_view.remove_children()
        self.hidden_messages = messages
        await self.show_earlier_messages()
        self.log_view.scroll_end(animate=False)
        self.log_view.anchor()
        self.refresh_sidebar()
        self.update_context()
        if self.engine is not None or self.load_error:
            if self.wanted_spec() != self.loaded_spec and self.job is None:
                self.start_loading(self.wanted_spec())

    async def show_earlier_messages(self) -> None:
        log = self.log_view
        for button in log.query("#show-earlier"):
            await button.remove()
        chunk = self.hidden_messages[-RENDER_FIRST:]
        self.hidden_messages = self.hidden_messages[:-RENDER_FIRST]
        widgets = [self.widget_for(m) for m in chunk]
        if self.hidden_messages:
            widgets.insert(0, Button(f"Show earlier messages ({len(self.hidden_messages)} more)", id="show-earlier"))
        if log.children:
            await log.mount_all(widgets, before=log.children[0])
        else:
            await log.mount_all(widgets)

    def widget_for(self, message: StoredMessage) -> ChatMessage:
        if message.role == "assistant":
            live = self.job is not None and self.job.message_id == message.id
            content = self.job.text if live else message.content
            status = Status.STREAMING if live else message.status
            return AssistantMessage(message.id, content, status, message.stats, message.error, self.model_label())
        return UserMessage(message.id, message.role, message.content)

    def model_label(self) -> str:
        return self.engine.model_name if self.engine is not None else "Assistant"

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "show-earlier":
            await self.show_earlier_messages()
            self.update_context()

    async def on_conversation_sidebar_selected(self, event: ConversationSidebar.Selected) -> None:
        if self.conversation is None or event.conversation_id != self.conversation.id:
            await self.open_conversation(event.conversation_id)
        self.prompt.focus()

    def on_conversation_sidebar_filter_changed(self, event: ConversationSidebar.FilterChanged) -> None:
        self.refresh_sidebar()

    # --- chatting ---

    def engine_messages(self) -> list[Message]:
        system = self.chat_settings().system_prompt.strip()
        messages = [Message("system", system)] if system else []
        for stored in self.store.messages(self.conversation.id):
            if stored.content and stored.status not in NOT_SENT_TO_MODEL:
                messages.append(Message(stored.role, stored.content))
        return messages

    def chat_settings(self) -> ChatDefaults:
        return ChatDefaults.from_dict(self.conversation.settings.get("chat", {})) if self.conversation else self.settings.chat

    def can_generate(self) -> bool:
        if self.job is not None:
            self.notify("A reply is still streaming: Esc stops it", severity="warning")
            return False
        if self.engine is None:
            self.notify(self.load_error or "The model is still loading; your message is kept", severity="error")
            return False
        return True

    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        if not self.can_generate():
            return
        text = event.text.strip("\n")
        message = self.store.add_message(self.conversation.id, "user", text)
        self.prompt.remember(text)
        self.prompt.text = ""
        await self.log_view.mount(UserMessage(message.id, "user", text))
        self.conversation = self.store.conversation(self.conversation.id)
        await self.start_reply()
        self.refresh_sidebar()

    async def start_reply(self, continuing: StoredMessage | None = None) -> None:
        messages = self.engine_messages()
        if continuing is None:
            stored = self.store.add_message(self.conversation.id, "assistant", "", status=Status.STREAMING)
        else:
            stored = continuing
            self.store.reopen_message(stored.id)
        params = self.chat_settings().sampling_params()
        self.job = ReplyJob(self.engine, self.store, self.conversation.id, stored.id, messages, params,
                            continue_last=continuing is not None, text=stored.content)
        await self.log_view.mount(AssistantMessage(stored.id, stored.content, Status.STREAMING, model_name=self.model_label()))
        self.log_view.scroll_end(animate=False)
        self.log_view.anchor()
        self.update_context()
        self.generate(self.job)

    @work(thread=True, group="reply")
    def generate(self, job: ReplyJob) -> None:
        job.run(self.post_message)

    async def on_reply_piece(self, event: ReplyPiece) -> None:
        widget = self.log_view.widget_for(event.message_id)
        if isinstance(widget, AssistantMessage):
            await widget.append(event.text, event.end)

    async def on_reply_done(self, event: ReplyDone) -> None:
        job = event.job
        if self.job is job:
            self.job = None
        widget = self.log_view.widget_for(job.message_id)
        if isinstance(widget, AssistantMessage):
            await widget.finish(job.text, job.status, job.stats, job.error)
        if job.error:
            self.notify(f"The reply failed: {job.error}", severity="error", timeout=10)
        for notice in (job.stats or {}).get("notices", []):
            self.notify(notice, severity="information")
        self.update_context()
        if self.wanted_spec() != self.loaded_spec:
            self.start_loading(self.wanted_spec())

    def update_context(self) -> None:
        bars = self.main_screen.query(ContextBar) if self.screen_stack else []
        if not bars:
            return  # the app is closing
        bar = bars.first()
        if self.engine is None or self.conversation is None:
            bar.show_text(self.load_error and "no model loaded" or ("loading model…" if self.engine is None else ""))
            return
        try:
            fitted = self.engine.fit(self.engine_messages(), self.engine.default_reserve(self.chat_settings().sampling_params()))
        except EngineBusy:
            return  # a reply is streaming; the bar is updated when it ends
        except Exception as error:  # noqa: BLE001 - e.g. a template that refuses this conversation
            bar.show_text(f"context: {error}")
            return
        bar.show(len(fitted.ids), self.engine.context_length, fitted.dropped_messages, self.engine.model_name,
                 self.engine.trained_context_length)
        sent = [w for w in self.log_view.message_widgets() if w.content and w.status not in NOT_SENT_TO_MODEL]
        hidden = len([m for m in self.hidden_messages if m.content and m.status not in NOT_SENT_TO_MODEL])
        for index, widget in enumerate(sent):
            widget.set_out_of_context(index + hidden < fitted.dropped_messages)

    # --- actions (each one has a key and a command palette entry) ---

    def check_action(self, action: str, parameters) -> bool | None:
        if action in APP_ACTIONS and isinstance(self.screen, ModalScreen):
            return False
        return True

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key, action, description, _ in APP_KEYS:
            yield SystemCommand(description, f"{description} ({key})", partial(self.run_action, action))

    def on_unmount(self) -> None:
        if self.job is not None:
            self.job.backend.cancel()


def run_app(model_spec: str | None = None, backend: str = "auto", device: str = "auto", context: int | None = None) -> int:
    """`chatapp` and `chatapp chat`: open the app; returns the exit code."""
    app = ChatApp(model_spec, backend, device, opener=partial(open_model, context=context))
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    import sys

    sys.exit(run_app(sys.argv[1] if len(sys.argv) > 1 else None))
