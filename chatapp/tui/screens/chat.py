"""The chat screen: a sidebar of conversations, the open conversation, the input, the context bar.

It owns the open conversation, its reply job, its messages and every action on
them. The App (chatapp/tui/app.py) loads the engine and holds the history store
and the settings; this screen asks it for them. A reply is generated in a
worker thread (generation.ReplyJob) that saves it as it grows; the screen only
shows what it is sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from textual import work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Static

from chatapp.history import CONTINUABLE, NOT_SENT_TO_MODEL, HistoryStore, Status, StoredConversation, StoredMessage
from chatapp.paths import data_dir
from chatapp.settings import ChatDefaults
from chatapp.tui.export import export_files
from chatapp.tui.generation import ReplyDone, ReplyJob, ReplyPiece
from chatapp.tui.keys import APP_KEYS, app_bindings
from chatapp.tui.screens.dialogs import ConfirmScreen, TextPromptScreen
from chatapp.tui.screens.inspector import InspectorScreen
from chatapp.tui.screens.models import ModelPickerScreen
from chatapp.tui.screens.settings import ConversationSettings, SettingsScreen
from chatapp.tui.widgets.context_bar import ContextBar
from chatapp.tui.widgets.messages import AssistantMessage, ChatLog, ChatMessage, UserMessage
from chatapp.tui.widgets.prompt import PromptInput
from chatapp.tui.widgets.sidebar import ConversationSidebar
from model.inference.backend import EngineBusy
from model.text.chat_format import Message

RENDER_FIRST = 40  # messages mounted when a conversation opens; earlier ones on request
APP_ACTIONS = {"help"}  # the App's own among keys.APP_KEYS; every other one is this screen's
CHAT_ACTIONS = {action for _, action, _, _ in APP_KEYS} - APP_ACTIONS


def screen_bindings() -> list[Binding]:
    """Every key of keys.APP_KEYS in its order, which is the footer's; the App's own ones go to the App."""
    return [replace(b, action=f"app.{b.action}") if b.action in APP_ACTIONS else b for b in app_bindings()]


class ChatScreen(Screen):
    BINDINGS = screen_bindings()

    def __init__(self):
        super().__init__()
        self.conversation: StoredConversation | None = None
        self.job: ReplyJob | None = None
        self.hidden_messages: list[StoredMessage] = []  # the earliest ones, not mounted yet

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
    def store(self) -> HistoryStore:
        return self.app.store

    @property
    def engine(self):
        return self.app.engine

    @property
    def log_view(self) -> ChatLog:
        return self.query_one(ChatLog)

    @property
    def prompt(self) -> PromptInput:
        return self.query_one(PromptInput)

    async def on_mount(self) -> None:
        self.prompt.earlier_prompts = self.store.user_prompts()
        latest = self.store.conversations()
        await self.open_conversation(latest[0].id if latest else self.new_conversation().id)
        self.prompt.focus()
        if self.engine is None:
            self.load_wanted_model()

    # --- the model: the App loads the one this conversation wants ---

    def wanted_spec(self) -> str:
        settings = self.conversation.settings if self.conversation else {}
        return settings.get("model") or self.app.default_spec

    def wanted_backend(self) -> str:
        settings = self.conversation.settings if self.conversation else {}
        return settings.get("backend") or self.app.backend_kind

    def load_wanted_model(self) -> None:
        self.app.start_loading(self.wanted_spec(), self.wanted_backend())

    def model_changed(self) -> None:
        """Called by the App when a model starts loading, is ready or failed."""
        if self.app.load_error:
            self.show_banner(self.app.load_error + "  (F4 picks another model)", error=True)
        elif self.engine is None:
            self.show_banner(f"Loading model {self.app.loaded_spec or 'built-in'}…")
        else:
            self.show_banner("")
            self.update_context()

    def show_banner(self, text: str, error: bool = False) -> None:
        banner = self.query_one("#banner", Static)
        banner.update(text)
        banner.display = bool(text)
        banner.set_class(error, "error")

    # --- conversations ---

    def new_conversation(self) -> StoredConversation:
        defaults = {"chat": self.app.settings.chat.to_dict(), "model": "", "backend": ""}
        return self.store.create_conversation(defaults)

    def refresh_sidebar(self) -> None:
        text_filter = self.query_one("#filter").value
        current = self.conversation.id if self.conversation else None
        self.query_one(ConversationSidebar).show(self.store.conversations(text_filter), current)

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
        if self.engine is not None or self.app.load_error:
            if self.wanted_spec() != self.app.loaded_spec and self.job is None:
                self.load_wanted_model()

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
        if self.conversation is None:
            return self.app.settings.chat
        return ChatDefaults.from_dict(self.conversation.settings.get("chat", {}))

    def can_generate(self) -> bool:
        if self.job is not None:
            self.notify("A reply is still streaming: Esc stops it", severity="warning")
            return False
        if self.engine is None:
            self.notify(self.app.load_error or "The model is still loading; your message is kept", severity="error")
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
        if self.wanted_spec() != self.app.loaded_spec:
            self.load_wanted_model()

    async def stop_and_wait(self, timeout: float = 5.0) -> None:
        if self.job is None:
            return
        self.job.backend.cancel()
        workers = [w for w in self.workers if w.group == "reply"]
        for worker in workers:
            try:
                await asyncio.wait_for(worker.wait(), timeout)
            except Exception:  # noqa: BLE001 - quitting must not fail
                pass

    def on_unmount(self) -> None:
        if self.job is not None:
            self.job.backend.cancel()

    def update_context(self) -> None:
        bars = self.query(ContextBar)
        if not bars:
            return  # the app is closing
        bar = bars.first()
        if self.engine is None or self.conversation is None:
            bar.show_text(self.app.load_error and "no model loaded" or ("loading model…" if self.engine is None else ""))
            return
        try:
            fitted = self.engine.fit(self.engine_messages(), self.engine.default_reserve(self.chat_settings().sampling_params()))
        except EngineBusy:
            return  # a reply is streaming; the bar is updated when it ends
        except Exception as error:  # noqa: BLE001 - e.g. a template that refuses this conversation
            bar.show_text(f"context: {error}")
            return
        bar.show(fitted.size, self.engine.context_length, fitted.dropped_messages, self.engine.model_name,
                 self.engine.trained_context_length)
        sent = [w for w in self.log_view.message_widgets() if w.content and w.status not in NOT_SENT_TO_MODEL]
        hidden = len([m for m in self.hidden_messages if m.content and m.status not in NOT_SENT_TO_MODEL])
        for index, widget in enumerate(sent):
            widget.set_out_of_context(index + hidden < fitted.dropped_messages)

    # --- actions (each one has a key and a command palette entry) ---

    def check_action(self, action: str, parameters) -> bool | None:
        # the command palette lists these over a dialog too; there they do nothing
        # (not self.is_current: that holds for a screen seen behind a dialog)
        return action not in CHAT_ACTIONS or self.app.screen is self

    def action_stop(self) -> None:
        if self.job is not None and self.engine is not None:
            self.job.backend.cancel()

    async def action_new_conversation(self) -> None:
        if self.conversation is not None and not self.store.messages(self.conversation.id):
            self.prompt.focus()
            return  # the current one is still empty
        await self.open_conversation(self.new_conversation().id)
        self.prompt.focus()

    def action_rename(self) -> None:
        async def rename(title: str | None) -> None:
            if title is not None:
                self.store.rename(self.conversation.id, title)
                self.conversation = self.store.conversation(self.conversation.id)
                self.refresh_sidebar()
        self.app.push_screen(TextPromptScreen("Rename this conversation", self.conversation.title), rename)

    def action_delete_conversation(self) -> None:
        async def delete(confirmed: bool | None) -> None:
            if not confirmed:
                return
            if self.job is not None and self.job.conversation_id == self.conversation.id:
                await self.stop_and_wait()
            self.store.delete(self.conversation.id)
            remaining = self.store.conversations()
            await self.open_conversation(remaining[0].id if remaining else self.new_conversation().id)
        self.app.push_screen(ConfirmScreen(f"Delete “{self.conversation.title}” and all its messages?"), delete)

    def action_filter(self) -> None:
        self.query_one(ConversationSidebar).display = True
        self.query_one("#filter").focus()

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one(ConversationSidebar)
        sidebar.display = not sidebar.display

    def last_message(self, role: str) -> StoredMessage | None:
        return next((m for m in reversed(self.store.messages(self.conversation.id)) if m.role == role), None)

    async def remove_from(self, message: StoredMessage) -> None:
        self.store.delete_messages_from(self.conversation.id, message.id)
        for widget in self.log_view.message_widgets():
            if widget.message_id >= message.id:
                await widget.remove()

    async def action_regenerate(self) -> None:
        last = self.last_message("assistant")
        if last is None or not self.can_generate():
            return
        await self.remove_from(last)
        await self.start_reply()

    async def action_edit_last(self) -> None:
        last = self.last_message("user")
        if last is None or self.job is not None:
            return
        await self.remove_from(last)
        self.prompt.text = last.content
        self.prompt.move_cursor(self.prompt.document.end)
        self.prompt.focus()
        self.update_context()

    async def action_continue_reply(self) -> None:
        messages = self.store.messages(self.conversation.id)
        last = messages[-1] if messages else None
        if last is None or last.role != "assistant" or last.status not in CONTINUABLE:
            self.notify("Only a reply that stopped before its end can be continued")
            return
        if not self.can_generate():
            return
        if not self.engine.supports_continue:
            self.notify(f"The {self.engine.name} backend cannot continue a reply yet", severity="warning")
            return
        widget = self.log_view.widget_for(last.id)
        if widget is not None:
            await widget.remove()
        await self.start_reply(continuing=last)

    def selected_message(self, role: str | None = None) -> ChatMessage | None:
        focused = self.focused
        if isinstance(focused, ChatMessage) and (role is None or focused.role == role):
            return focused
        widgets = [w for w in self.log_view.message_widgets() if role is None or w.role == role]
        return widgets[-1] if widgets else None

    def action_copy_message(self) -> None:
        message = self.selected_message()
        if message is None:
            return
        self.app.copy_to_clipboard(message.content)
        self.notify("Copied the message")

    def action_copy_code(self) -> None:
        message = self.selected_message("assistant")
        blocks = message.code_blocks() if isinstance(message, AssistantMessage) else []
        if not blocks:
            self.notify("No code block in that reply")
            return
        self.app.copy_to_clipboard(blocks[-1])
        self.notify("Copied the code block")

    def action_export(self) -> None:
        paths = export_files(data_dir() / "exports", self.conversation, self.store.messages(self.conversation.id))
        self.notify("Exported to " + " and ".join(str(p) for p in paths), timeout=10)

    def action_inspect(self) -> None:
        message = self.selected_message("assistant")
        if message is None:
            self.notify("No reply to inspect yet")
            return
        live = self.job is not None and self.job.message_id == message.message_id
        steps = self.job.inspection if live else (self.store.message(message.message_id).inspection or [])
        if not steps:
            self.notify("No token data for this reply: the backend did not report candidates", severity="warning")
            return
        params = self.chat_settings()
        text = f"temperature {params.temperature}, top-k {params.top_k}, top-p {params.top_p}, min-p {params.min_p}"
        self.app.push_screen(InspectorScreen(list(steps), text))

    def action_settings(self) -> None:
        from chatapp.model_discovery import model_spec

        settings = self.conversation.settings
        current = ConversationSettings(self.chat_settings(), settings.get("model", ""), settings.get("backend") or "auto")
        models = [(f"{ref.name} ({ref.source})", model_spec(ref)) for ref in self.app.model_choices()]

        def save(result: ConversationSettings | None) -> None:
            if result is None:
                return
            self.store.save_settings(self.conversation.id, {"chat": result.chat.to_dict(), "model": result.model, "backend": result.backend})
            self.conversation = self.store.conversation(self.conversation.id)
            self.notify("Settings saved for this conversation")
            self.update_context()
            if self.job is None and (self.wanted_spec() != self.app.loaded_spec or result.backend != current.backend):
                self.load_wanted_model()
        self.app.push_screen(SettingsScreen(current, models), save)

    def action_models(self) -> None:
        def chosen(spec: str | None) -> None:
            if not spec:
                return
            self.app.remember_model_path(spec)
            self.store.save_settings(self.conversation.id, {**self.conversation.settings, "model": spec})
            self.conversation = self.store.conversation(self.conversation.id)
            if self.job is None:
                self.load_wanted_model()
        self.app.push_screen(ModelPickerScreen(self.app.model_choices(), self.app.loaded_spec or ""), chosen)
