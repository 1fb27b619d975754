"""The chat screen: a sidebar of conversations, the open conversation, the input, the context bar.

It owns the open conversation, its reply job, its messages and every action on
them (those on single messages are in screens/message_actions.py). The App (chatapp/tui/app.py) loads the engine and holds the history store
and the settings; this screen asks it for them. A reply is generated in a
worker thread (generation.ReplyJob) that saves it as it grows; the screen only
shows what it is sent.

A conversation opens with its newest PAGE_SIZE messages; earlier ones load as
the user scrolls up, so a conversation of any length opens at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from textual import work
from textual.binding import Binding
from textual.command import CommandPalette
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from chatapp.history import (NOT_SENT_TO_MODEL, HistoryError, HistoryStore, Status,
                             StoredConversation, StoredMessage)
from chatapp.settings import ChatDefaults, SettingsError, save_chat_defaults
from chatapp.tui.generation import ReplyDone, ReplyJob, ReplyPiece, ReplySaveFailed
from chatapp.tui.search_palette import HistorySearch
from chatapp.tui.keys import APP_KEYS, app_bindings
from chatapp.tui.screens.dialogs import ConfirmScreen, TextPromptScreen
from chatapp.tui.screens.message_actions import MessageActions
from chatapp.tui.screens.models import ModelPickerScreen
from chatapp.tui.screens.settings import ConversationSettings, SettingsScreen
from chatapp.tui.widgets.context_bar import ContextBar
from chatapp.tui.widgets.messages import AssistantMessage, ChatLog, ChatMessage, UserMessage
from chatapp.tui.widgets.prompt import PromptInput
from chatapp.tui.widgets.sidebar import ConversationSidebar
from chatapp.tui.widgets.welcome import Welcome
from model.inference.backend import EngineBusy
from model.text.chat_format import FittedPrompt, Message

PAGE_SIZE = 20  # messages mounted when a conversation opens, and each time the user scrolls to the top
MOST_MOUNTED = 3 * PAGE_SIZE
FIRST_BATCH = 32  # messages read to fit the context; more (x4 each time) while all of them fit
SIDEBAR_ROWS = 200  # the newest conversations listed; the filter finds every one
SAVE_RETRY_S = 2.0  # how often a reply the disk had no room for is saved again
APP_ACTIONS = {"help", "stop_or_quit"}  # the App's own among keys.APP_KEYS; every other one is this screen's
CHAT_ACTIONS = {action for _, action, _, _ in APP_KEYS} - APP_ACTIONS


def screen_bindings() -> list[Binding]:
    """Every key of keys.APP_KEYS in its order, which is the footer's; the App's own ones go to the App."""
    return [replace(b, action=f"app.{b.action}") if b.action in APP_ACTIONS else b for b in app_bindings()]


class ChatScreen(MessageActions, Screen):
    BINDINGS = screen_bindings()

    def __init__(self):
        super().__init__()
        self.conversation: StoredConversation | None = None
        self.job: ReplyJob | None = None
        self.editing: StoredMessage | None = None  # the user message Ctrl+L put back in the input
        self.unsaved: list[ReplyJob] = []  # finished replies the disk had no room for yet
        self.has_earlier = False  # messages above the first one mounted
        self.loading_earlier = False

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
        await self.open_conversation(self.first_conversation_id())
        self.prompt.focus()
        if self.engine is None:
            self.load_wanted_model()
        self.set_interval(SAVE_RETRY_S, self.save_unsaved)

    def first_conversation_id(self) -> int:
        """The conversation open when the app last closed, else the newest, else a new one."""
        last = self.store.last_open()
        if last is not None and self.store.conversation(last) is not None:
            return last
        latest = self.store.conversations()
        return latest[0].id if latest else self.new_conversation().id

    async def history_replaced(self) -> None:
        """The App opened another history file (the old one was moved aside)."""
        self.prompt.earlier_prompts = self.store.user_prompts()
        await self.open_conversation(self.first_conversation_id())

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
            self.show_banner(self.app.history_notice or "")
            self.update_context()
        for welcome in self.query(Welcome):
            welcome.show(self.app.model_title(), self.app.model_description)

    def show_banner(self, text: str, error: bool = False) -> None:
        banner = self.query_one("#banner", Static)
        banner.update(text)
        banner.display = bool(text)
        banner.set_class(error, "error")

    # --- conversations ---

    def new_conversation(self) -> StoredConversation:
        defaults = {"chat": self.app.settings.chat.to_dict(), "model": "", "backend": ""}
        return self.store.create_conversation(defaults)

    def sidebar_conversations(self) -> list[StoredConversation]:
        return self.store.conversations(self.query_one("#filter").value)

    def refresh_sidebar(self) -> None:
        current = self.conversation.id if self.conversation else None
        conversations = self.sidebar_conversations()
        listed = conversations[:SIDEBAR_ROWS]
        if current is not None and current not in {c.id for c in listed}:
            listed += [c for c in conversations if c.id == current]
        self.query_one(ConversationSidebar).show(listed, current, more=len(conversations) - len(listed))

    async def open_conversation(self, conversation_id: int) -> None:
        """Show a conversation's newest messages; earlier ones load as the user scrolls up."""
        self.cancel_edit()
        self.conversation = self.store.conversation(conversation_id)
        self.store.remember_open(conversation_id)
        page = self.store.messages(conversation_id, limit=PAGE_SIZE)
        self.has_earlier = len(page) == PAGE_SIZE and self.store.message_count(conversation_id) > PAGE_SIZE
        log = self.log_view
        await log.remove_children()
        await log.mount_all([self.widget_for(m) for m in page] or [self.welcome()])
        log.scroll_end(animate=False)
        log.anchor()
        self.refresh_sidebar()
        self.update_context()
        self.call_after_refresh(self.fill_the_view)
        if self.engine is not None or self.app.load_error:
            if self.wanted_spec() != self.app.loaded_spec and self.job is None:
                self.load_wanted_model()

    def welcome(self) -> Welcome:
        welcome = Welcome(id="welcome")
        welcome.show(self.app.model_title(), self.app.model_description)
        return welcome

    async def fill_the_view(self) -> None:
        """Short messages may not fill the screen, and a log that cannot scroll never reaches its top."""
        while self.has_earlier and self.log_view.max_scroll_y == 0 and self.is_mounted:
            await self.load_earlier_messages()

    async def on_chat_log_near_top(self, event: ChatLog.NearTop) -> None:
        await self.load_earlier_messages()

    async def load_earlier_messages(self) -> None:
        if not self.has_earlier or self.loading_earlier or self.conversation is None:
            return
        self.loading_earlier = True
        try:
            shown = self.log_view.message_widgets()
            before = shown[0].message_id if shown else None
            page = self.store.messages(self.conversation.id, before=before, limit=PAGE_SIZE)
            self.has_earlier = len(page) == PAGE_SIZE
            if page:
                await self.log_view.prepend([self.widget_for(m) for m in page])
                self.update_context()
        finally:
            self.loading_earlier = False

    def widget_for(self, message: StoredMessage) -> ChatMessage:
        if message.role == "assistant":
            live = self.job is not None and self.job.message_id == message.id
            content = self.job.text if live else message.content
            status = Status.STREAMING if live else message.status
            return AssistantMessage(message.id, content, status, message.stats, message.error,
                                    message.model or "Assistant", message.version, message.version_count)
        return UserMessage(message.id, message.role, message.content)

    async def on_conversation_sidebar_selected(self, event: ConversationSidebar.Selected) -> None:
        if self.conversation is None or event.conversation_id != self.conversation.id:
            await self.open_conversation(event.conversation_id)
        self.prompt.focus()

    def on_conversation_sidebar_filter_changed(self, event: ConversationSidebar.FilterChanged) -> None:
        self.refresh_sidebar()

    # --- chatting ---

    def model_view(self, continue_last: bool = False) -> tuple[list[Message], FittedPrompt, int]:
        """What the model is sent: its system prompt and the newest messages that fit, how they fit,
        and how many earlier messages were not even read. Messages are read newest first, in growing
        batches, until some no longer fit: a long conversation costs no more than a short one."""
        system = self.chat_settings().system_prompt.strip()
        reserve = self.engine.default_reserve(self.chat_settings().sampling_params())
        total = self.store.message_count(self.conversation.id)
        batch = FIRST_BATCH
        while True:
            stored = self.store.messages(self.conversation.id, limit=batch)
            messages = [Message("system", system)] if system else []
            messages += [Message(m.role, m.content) for m in stored if m.content and m.status not in NOT_SENT_TO_MODEL]
            fitted = self.engine.fit(messages, reserve, continue_last)
            if fitted.dropped_messages or len(stored) >= total:
                return messages, fitted, total - len(stored)
            batch *= 4

    def chat_settings(self) -> ChatDefaults:
        if self.conversation is None:
            return self.app.settings.chat
        return ChatDefaults.from_dict(self.conversation.settings.get("chat", {}))

    def can_generate(self) -> bool:
        if self.job is not None:
            self.notify("A reply is still streaming: Esc or Ctrl+C stops it", severity="warning")
            return False
        if self.engine is None:
            self.notify(self.app.load_error or "The model is still loading; your message is kept", severity="error")
            return False
        return True

    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        if not self.can_generate():
            return
        text = event.text.strip("\n")
        try:
            if self.editing is not None:
                await self.remove_from(self.editing)  # the edited message takes its place, and its reply goes
                self.editing = None
            message = self.store.add_message(self.conversation.id, "user", text)
        except HistoryError as error:
            self.notify(f"Not sent: {error.reason} (your message is kept in the input)", severity="error", timeout=15)
            return
        self.prompt.remember(text)
        self.prompt.text = ""
        for welcome in self.query(Welcome):
            await welcome.remove()
        await self.log_view.mount(UserMessage(message.id, "user", text))
        self.conversation = self.store.conversation(self.conversation.id)
        await self.start_reply()
        self.refresh_sidebar()

    async def start_reply(self, continuing: StoredMessage | None = None, version_of: int | None = None) -> None:
        if continuing is None:  # a new reply (or version) is added first: the version it replaces is not sent
            stored = self.store.add_message(self.conversation.id, "assistant", "", status=Status.STREAMING,
                                            model=self.engine.model_name, version_of=version_of)
            messages, _, _ = self.model_view()
        else:  # the reply to continue is sent as it is, then reopened
            messages, _, _ = self.model_view(continue_last=True)
            stored = continuing
            self.store.reopen_message(stored.id)
        params = self.chat_settings().sampling_params()
        self.job = ReplyJob(self.engine, self.store, self.conversation.id, stored.id, messages, params,
                            continue_last=continuing is not None, text=stored.content)
        await self.log_view.mount(self.widget_for(stored))  # the job is set: it shows as streaming
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

    def on_reply_save_failed(self, event: ReplySaveFailed) -> None:
        self.notify(f"{event.reason}. The reply goes on and stays on screen.", severity="error", timeout=15)

    async def on_reply_done(self, event: ReplyDone) -> None:
        job = event.job
        if self.job is job:
            self.job = None
        if job.unsaved:
            self.unsaved.append(job)
        widget = self.log_view.widget_for(job.message_id)
        if isinstance(widget, AssistantMessage):
            await widget.finish(job.text, job.status, job.stats, job.error)
        if job.error:
            self.notify(f"The reply failed: {job.error}", severity="error", timeout=10)
        for notice in (job.stats or {}).get("notices", []):
            self.notify(notice, severity="information")
        self.update_context()
        await self.trim_log()
        if self.wanted_spec() != self.app.loaded_spec:
            self.load_wanted_model()

    async def trim_log(self) -> None:
        """Keep at most MOST_MOUNTED messages mounted while the user reads the end: the oldest go
        (they load again on scrolling up), so a long session lays out as fast as a short one."""
        log = self.log_view
        mounted = log.message_widgets()
        if len(mounted) > MOST_MOUNTED and log.is_vertical_scroll_end:
            await log.remove_children(mounted[:len(mounted) - MOST_MOUNTED])
            self.has_earlier = True

    def save_unsaved(self) -> None:
        """Replies that finished while the disk was full: saved as soon as it has room."""
        for job in list(self.unsaved):
            if job.save():
                self.unsaved.remove(job)
                self.notify("The disk has room again: the reply is saved")

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
        reserve = self.engine.default_reserve(self.chat_settings().sampling_params())
        try:
            _, fitted, not_read = self.model_view()
        except EngineBusy:
            return  # a reply is streaming; the bar is updated when it ends
        except Exception as error:  # noqa: BLE001 - e.g. a template that refuses this conversation
            bar.show_text(f"context: {error}")
            return
        dropped = fitted.dropped_messages + not_read
        bar.show(fitted.size, reserve, self.engine.context_length, dropped, self.engine.model_name,
                 self.engine.trained_context_length)
        self.mark_dropped_messages(dropped)

    def mark_dropped_messages(self, dropped: int) -> None:
        """Dim the mounted messages that no longer fit in the context."""
        sent = [w for w in self.log_view.message_widgets() if w.content and w.status not in NOT_SENT_TO_MODEL]
        count = self.store.message_count(self.conversation.id)
        above = count - len(self.log_view.message_widgets())  # not mounted; each of them was dropped first
        for index, widget in enumerate(sent):
            widget.set_out_of_context(index + above < dropped)

    # --- actions (each one has a key and a command palette entry) ---

    def check_action(self, action: str, parameters) -> bool | None:
        # the command palette lists these over a dialog too; there they do nothing
        # (not self.is_current: that holds for a screen seen behind a dialog)
        return action not in CHAT_ACTIONS or self.app.screen is self

    def action_stop(self) -> bool:
        """Stop the streaming reply; False when nothing streams."""
        if self.job is None or self.engine is None:
            return False
        self.job.backend.cancel()
        return True

    async def action_new_conversation(self) -> None:
        if self.conversation is not None and not self.store.message_count(self.conversation.id):
            self.prompt.focus()
            return  # the current one is still empty
        await self.open_conversation(self.new_conversation().id)
        self.prompt.focus()

    async def action_next_conversation(self) -> None:
        await self.step_conversation(+1)

    async def action_previous_conversation(self) -> None:
        await self.step_conversation(-1)

    async def step_conversation(self, step: int) -> None:
        """The next or previous conversation in the sidebar's order (newest first)."""
        ids = [c.id for c in self.sidebar_conversations()]
        if not ids:
            return
        current = ids.index(self.conversation.id) if self.conversation.id in ids else -step
        target = ids[max(0, min(len(ids) - 1, current + step))]
        if target != self.conversation.id:
            await self.open_conversation(target)

    def action_search(self) -> None:
        self.app.push_screen(CommandPalette(providers=[HistorySearch], placeholder="Search every conversation…"))

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

    def action_settings(self) -> None:
        from chatapp.models.resolve import model_spec

        settings = self.conversation.settings
        current = ConversationSettings(self.chat_settings(), settings.get("model", ""), settings.get("backend") or "auto")
        models = [(f"{ref.name} ({ref.source})", model_spec(ref)) for ref in self.app.model_choices()]

        def save(result: ConversationSettings | None) -> None:
            if result is None:
                return
            self.store.save_settings(self.conversation.id, {"chat": result.chat.to_dict(), "model": result.model, "backend": result.backend})
            self.conversation = self.store.conversation(self.conversation.id)
            if result.as_default:
                self.app.settings.chat = result.chat
                try:
                    if self.app.settings.path is not None:
                        save_chat_defaults(self.app.settings.path, result.chat)
                    self.notify("Settings saved for this conversation and for new chats")
                except SettingsError as error:
                    self.notify(f"Saved for this conversation only: {error}", severity="error", timeout=10)
            else:
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

