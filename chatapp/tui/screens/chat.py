"""The chat screen: a sidebar of conversations, the open conversation, the input, the context bar.

It owns the open conversation, its reply job, its messages and every action on
them (those on single messages are in screens/message_actions.py). The App
(chatapp/tui/app.py) loads the engine and holds the history store and the
settings; this screen asks it for them (typed by host.ChatHost). A reply is
generated in a worker thread (generation.ReplyJob) that saves it as it grows;
the screen only shows what it is sent.

A conversation opens with its newest PAGE_SIZE messages; earlier ones load as
the user scrolls up, so a conversation of any length opens at once. What the
screen shows, and the model is sent, is one branch of the conversation's tree
(chatapp/history/store.py); a search hit opens its branch at the match.

Each window owns the conversations it writes into (claims.py): one that another
window has open is not opened here.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import replace
from typing import TYPE_CHECKING, cast

from textual import work
from textual.actions import SkipAction
from textual.binding import Binding, BindingType
from textual.command import CommandPalette
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Input, Static

from chatapp.history import NOT_SENT_TO_MODEL, HistoryError, HistoryStore, Status, StoredConversation, StoredMessage
from chatapp.settings import ChatDefaults, SettingsError, save_chat_defaults
from chatapp.tui.claims import ConversationClaims
from chatapp.tui.failures import failure_text, failures_as_notices, notifies_failures
from chatapp.tui.generation import (
    ReplyDone,
    ReplyJob,
    ReplyPiece,
    ReplySaveFailed,
    ReplyThinking,
    engine_error_text,
)
from chatapp.tui.keys import APP_KEYS, app_bindings
from chatapp.tui.screens.dialogs import ConfirmScreen, TextPromptScreen
from chatapp.tui.screens.message_actions import PAGE_SIZE, MessageActions
from chatapp.tui.screens.models import ModelPickerScreen, model_phrase
from chatapp.tui.screens.settings import ConversationSettings, SettingsScreen
from chatapp.tui.search_palette import HistorySearch
from chatapp.tui.widgets.context_bar import ContextBar
from chatapp.tui.widgets.messages import AssistantMessage, ChatLog, ChatMessage, UserMessage, counted
from chatapp.tui.widgets.prompt import PromptInput
from chatapp.tui.widgets.sidebar import ConversationSidebar
from chatapp.tui.widgets.welcome import Welcome
from model.inference.backend import Backend, EngineBusy, thinking_switch
from model.text.chat_format import FittedPrompt, Message

if TYPE_CHECKING:
    from chatapp.tui.host import ChatHost

MOST_MOUNTED = 3 * PAGE_SIZE
FIRST_BATCH = 32  # messages read to fit the context; more (x4 each time) while all of them fit
SIDEBAR_ROWS = 200  # the newest conversations listed; the filter finds every one
SAVE_RETRY_S = 2.0  # how often a reply the disk had no room for is saved again
CATCH_UP_S = 1.0  # the longest Enter waits for the input to take the keys typed before it
APP_ACTIONS = {"help", "stop_or_quit"}  # the App's own among keys.APP_KEYS; every other one is this screen's
CHAT_ACTIONS = {action for _, action, _, _ in APP_KEYS} - APP_ACTIONS
# The engines' notice that the context is full (model/text/chat_format.py and the others): the context bar
# says it after every reply, so a toast says it once per conversation.
DROPPED_NOTICE = re.compile(r"^(\d+) earlier message\(s\) no longer fit")


def screen_bindings() -> list[BindingType]:
    """Every key of keys.APP_KEYS in its order, which is the footer's; the App's own ones go to the App.
    Enter in the input sends through a priority binding too, so that the App handles it in order with
    Ctrl+C: a Ctrl+C pressed right after Enter finds the message saved and its reply started."""
    keys: list[BindingType] = [
        replace(b, action=f"app.{b.action}") if b.action in APP_ACTIONS else b for b in app_bindings()
    ]
    return keys + [Binding("enter", "send", "Send", show=False, priority=True)]


class ChatScreen(MessageActions):
    BINDINGS = screen_bindings()

    def __init__(self) -> None:
        super().__init__()
        self.conversation: StoredConversation | None = None
        self.job: ReplyJob | None = None
        self.editing: StoredMessage | None = None  # the message Ctrl+L put back in the input
        self.told_dropped: set[int] = set()  # conversations whose "no longer fit" toast was shown
        self.unsaved: list[ReplyJob] = []  # finished replies the disk had no room for yet
        self.has_earlier = False  # messages above the first one mounted
        self.loading_earlier = False
        self.reply_ended_at = float("-inf")  # time.monotonic() when the last reply ended
        self.quit_armed = False  # Ctrl+C stopped a reply, or asked again: the next one quits
        self.claims = ConversationClaims(None)  # the history's, once mounted

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
    def chat_app(self) -> ChatHost:
        """The app, typed: ChatApp, which imports this screen (host.py)."""
        return cast("ChatHost", self.app)

    @property
    def store(self) -> HistoryStore:
        return self.chat_app.store

    @property
    def engine(self) -> Backend | None:
        return self.chat_app.engine

    @property
    def current(self) -> StoredConversation:
        """The open conversation: there is one from the first frame on."""
        assert self.conversation is not None, "the chat screen opens a conversation when it mounts"
        return self.conversation

    @property
    def log_view(self) -> ChatLog:
        return self.query_one(ChatLog)

    @property
    def has_later(self) -> bool:
        """Messages below the last one mounted (the log was opened at a search hit far back)."""
        return self.log_view.more_below

    @has_later.setter
    def has_later(self, more: bool) -> None:
        self.log_view.more_below = more

    @property
    def prompt(self) -> PromptInput:
        return self.query_one(PromptInput)

    async def on_mount(self) -> None:
        with failures_as_notices(self):
            self.claims = ConversationClaims(self.store.path)
            self.prompt.earlier_prompts = self.store.user_prompts()
            await self.open_conversation(self.first_conversation_id())
        self.prompt.focus()
        if self.engine is None:
            self.load_wanted_model()
        self.set_interval(SAVE_RETRY_S, self.save_unsaved)

    def first_conversation_id(self) -> int:
        """The conversation open when the app last closed, else the newest, else a new one; a new one too
        when another window has that one open (or is writing a reply into it). With a preset to start
        with (`chat --preset NAME`), a new one with the preset's settings."""
        preset = self.chat_app.start_preset
        if preset is not None:
            return self.store.create_conversation(
                {"chat": preset.chat.to_dict(), "model": preset.model, "backend": ""}
            ).id
        last = self.store.last_open()
        if last is None or self.store.conversation(last) is None:
            latest = self.store.conversations()
            last = latest[0].id if latest else None
        if last is None:
            return self.new_conversation().id
        if self.claims.claim(last) and not self.streaming_elsewhere(last):
            return last
        self.notify(
            "Your last conversation is open in another chatapp window: this one starts a new conversation", timeout=8
        )
        return self.new_conversation().id

    def streaming_elsewhere(self, conversation_id: int) -> bool:
        """A reply another running instance is writing into it (the store, when it opened, marked those of
        instances gone as interrupted: a row still streaming has a live writer)."""
        ours = self.job.message_id if self.job is not None else None
        recent = self.store.messages(conversation_id, limit=PAGE_SIZE)
        return any(m.status == Status.STREAMING and m.id != ours for m in recent)

    async def history_replaced(self) -> None:
        """The App opened another history file (the old one was moved aside)."""
        self.claims.release_all()
        self.claims = ConversationClaims(self.store.path)
        self.conversation = None
        self.prompt.earlier_prompts = self.store.user_prompts()
        await self.open_conversation(self.first_conversation_id())

    # --- the model: the App loads the one this conversation wants ---

    def wanted_spec(self) -> str:
        settings = self.conversation.settings if self.conversation else {}
        return str(settings.get("model") or self.chat_app.default_spec)

    def wanted_backend(self) -> str:
        settings = self.conversation.settings if self.conversation else {}
        return str(settings.get("backend") or self.chat_app.backend_kind)

    def load_wanted_model(self) -> None:
        self.chat_app.start_loading(self.wanted_spec(), self.wanted_backend())

    def model_changed(self) -> None:
        """Called by the App when a model starts loading, is ready or failed."""
        app = self.chat_app
        if app.load_error:
            self.show_banner(app.load_error + "  (Enter tries again · F4 picks another model)", error=True)
        elif self.engine is None:
            self.show_banner(f"Loading {model_phrase(app.loaded_spec)}…")
        else:
            self.show_banner(app.history_notice or "")
            self.update_context()
        for welcome in self.query(Welcome):
            welcome.show(app.model_title(), app.model_description)

    def show_banner(self, text: str, error: bool = False) -> None:
        banner = self.query_one("#banner", Static)
        banner.update(text)
        banner.display = bool(text)
        banner.set_class(error, "error")

    # --- conversations ---

    def new_conversation(self) -> StoredConversation:
        defaults = {"chat": self.chat_app.settings.chat.to_dict(), "model": "", "backend": ""}
        return self.store.create_conversation(defaults)

    def sidebar_conversations(self) -> list[StoredConversation]:
        return self.store.conversations(self.query_one("#filter", Input).value)

    def refresh_sidebar(self) -> None:
        current = self.conversation.id if self.conversation else None
        conversations = self.sidebar_conversations()
        listed = conversations[:SIDEBAR_ROWS]
        if current is not None and current not in {c.id for c in listed}:
            listed += [c for c in conversations if c.id == current]
        self.query_one(ConversationSidebar).show(listed, current, more=len(conversations) - len(listed))

    async def open_conversation(self, conversation_id: int, at_message: int | None = None) -> bool:
        """Show a conversation's newest messages; earlier ones load as the user scrolls up. With at_message
        (a search hit), the branch through that message, scrolled to it and marked.
        False, with a notice, when another window has it open: this one stays where it is."""
        if not self.claims.claim(conversation_id):
            self.notify("That conversation is open in another chatapp window", severity="warning")
            return False
        conversation = self.store.conversation(conversation_id)
        if conversation is None:
            self.claims.keep_only(self.conversations_written())
            self.notify("That conversation was deleted (in another window)", severity="warning")
            return False
        self.cancel_edit()
        self.conversation = conversation
        self.claims.keep_only(self.conversations_written())
        self.store.remember_open(conversation_id)
        found = self.store.message(at_message) if at_message is not None else None
        if found is not None and found.conversation_id != conversation_id:
            found = None  # a hit from before the history changed
        if found is not None and not self.streaming_into(found):
            try:
                self.store.show_branch(found.id)
            except HistoryError as error:  # the conversation opens on the branch it shows
                self.notify(f"The branch of that match cannot be shown: {failure_text(error)}", severity="error")
        await self.show_messages(found.id if found is not None else None, found=True)
        self.refresh_sidebar()
        self.update_context()
        self.call_after_refresh(self.fill_the_view)
        if self.engine is not None or self.chat_app.load_error:
            if self.wanted_spec() != self.chat_app.loaded_spec and self.job is None:
                self.load_wanted_model()
        return True

    def streaming_into(self, message: StoredMessage) -> bool:
        """This window's reply streams into the message's conversation (its branch must stay)."""
        return self.job is not None and self.job.conversation_id == message.conversation_id

    async def show_messages(self, at: int | None = None, found: bool = False) -> None:
        """Mount the shown branch's newest messages, or, when message `at` is older than those, a page from it
        on; earlier ones load as the user scrolls up, later ones as the user scrolls down. `at` is scrolled to,
        and marked when it was found by a search."""
        conversation_id = self.current.id
        page = self.store.messages(conversation_id, limit=PAGE_SIZE)
        self.has_later = False
        if at is not None and at not in {m.id for m in page}:
            window = self.store.messages(conversation_id, since=at, limit=PAGE_SIZE + 1)
            if window:
                page, self.has_later = window[:PAGE_SIZE], len(window) > PAGE_SIZE
        self.has_earlier = len(page) >= PAGE_SIZE and self.store.message_count(conversation_id) > len(page)
        if self.has_later:
            self.has_earlier = bool(self.store.messages(conversation_id, before=page[0].id, limit=1))
        log = self.log_view
        await log.remove_children()
        await log.mount_all([self.widget_for(m) for m in page] or [self.welcome()])
        target = log.widget_for(at) if at is not None else None
        if target is None:
            log.scroll_end(animate=False)
            log.anchor()
            return
        target.set_class(found, "found")
        log.anchor(False)  # the log stays where the match is, not at its end
        self.call_after_refresh(log.scroll_to_widget, target, animate=False, top=True)

    def conversations_written(self) -> set[int]:
        """What this window holds: the open conversation, and the one its reply streams into."""
        held = {self.conversation.id} if self.conversation is not None else set()
        return held | ({self.job.conversation_id} if self.job is not None else set())

    def welcome(self) -> Welcome:
        welcome = Welcome(id="welcome")
        welcome.show(self.chat_app.model_title(), self.chat_app.model_description)
        return welcome

    @notifies_failures
    async def fill_the_view(self) -> None:
        """Short messages may not fill the screen, and a log that cannot scroll never reaches its ends."""
        while (self.has_earlier or self.has_later) and self.log_view.max_scroll_y == 0 and self.is_mounted:
            if self.has_later:
                await self.load_later_messages()
            else:
                await self.load_earlier_messages()

    @notifies_failures
    async def on_chat_log_near_top(self, event: ChatLog.NearTop) -> None:
        await self.load_earlier_messages()

    @notifies_failures
    async def on_chat_log_near_bottom(self, event: ChatLog.NearBottom) -> None:
        await self.load_later_messages()

    async def load_later_messages(self) -> None:
        """The next page below the last message mounted (the log was opened at a search hit far back)."""
        if not self.has_later or self.loading_earlier or self.conversation is None:
            return
        self.loading_earlier = True
        try:
            shown = self.log_view.message_widgets()
            if not shown:
                return
            page = self.store.messages(self.conversation.id, since=shown[-1].message_id, limit=PAGE_SIZE + 2)[1:]
            self.has_later = len(page) > PAGE_SIZE
            await self.log_view.mount_all([self.widget_for(m) for m in page[:PAGE_SIZE]])
            self.update_context()
        finally:
            self.loading_earlier = False

    async def reach_the_end(self) -> None:
        """Where the log stops short of the branch's end, show its newest messages: a new one goes there."""
        if self.has_later:
            await self.show_messages()

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
            job = self.job if self.job is not None and self.job.message_id == message.id else None
            content = job.text if job is not None else message.content
            thinking = job.thinking if job is not None else message.reasoning
            status = Status.STREAMING if job is not None else message.status
            return AssistantMessage(
                message.id,
                content,
                status,
                message.stats,
                message.error,
                message.model or "Assistant",
                message.branch,
                message.branch_count,
                thinking,
            )
        return UserMessage(
            message.id, message.role, message.content, message.status, message.branch, message.branch_count
        )

    @notifies_failures
    async def on_conversation_sidebar_selected(self, event: ConversationSidebar.Selected) -> None:
        if self.conversation is None or event.conversation_id != self.conversation.id:
            if not await self.open_conversation(event.conversation_id):
                self.refresh_sidebar()  # the list's highlight goes back to the open one
        self.prompt.focus()

    @notifies_failures
    def on_conversation_sidebar_filter_changed(self, event: ConversationSidebar.FilterChanged) -> None:
        self.refresh_sidebar()

    # --- chatting ---

    def model_view(self, continue_last: bool = False) -> tuple[list[Message], FittedPrompt, int]:
        """What the model is sent: its system prompt and the newest messages that fit, how they fit,
        and how many earlier messages were not even read. Messages are read newest first, in growing
        batches, until some no longer fit: a long conversation costs no more than a short one."""
        engine, conversation = self.engine, self.current
        assert engine is not None, "only asked with a model loaded"
        system = self.chat_settings().system_prompt.strip()
        params = self.chat_settings().sampling_params()  # the reply's: its thinking switch changes the prompt
        reserve = engine.default_reserve(params)
        total = self.store.message_count(conversation.id)
        batch = FIRST_BATCH
        while True:
            stored = self.store.messages(conversation.id, limit=batch)
            messages = [Message("system", system)] if system else []
            messages += [
                Message(m.role, m.content, reasoning=m.reasoning)
                for m in stored
                if (m.content or m.reasoning) and m.status not in NOT_SENT_TO_MODEL
            ]
            fitted = engine.fit(messages, reserve, continue_last, params)
            if fitted.dropped_messages or len(stored) >= total:
                return messages, fitted, total - len(stored)
            batch *= 4

    def chat_settings(self) -> ChatDefaults:
        if self.conversation is None:
            return self.chat_app.settings.chat
        return ChatDefaults.from_dict(self.conversation.settings.get("chat", {}))

    def can_generate(self) -> bool:
        if self.job is not None:
            self.notify("A reply is still streaming: Esc or Ctrl+C stops it", severity="warning")
            return False
        if self.engine is None:
            if self.chat_app.load_error:  # the last try failed (a server that was down may be back): try again
                self.notify(
                    f"Opening {model_phrase(self.wanted_spec())} again; your message is kept: "
                    "Enter sends it once the model is ready",
                    timeout=8,
                )
                self.load_wanted_model()
            else:
                self.notify("The model is still loading; your message is kept", severity="warning")
            return False
        return True

    async def action_send(self) -> None:
        """Enter in the input (a priority binding: see screen_bindings); anywhere else Enter is the widget's."""
        if self.focused is not self.prompt:
            raise SkipAction()
        await self.input_caught_up()
        if self.prompt.text.strip():
            await self.send(self.prompt.text)

    async def input_caught_up(self) -> None:
        """Let the input handle the keys that came before this Enter (typed fast, or arriving in one burst):
        the App has passed them on to it already, but they wait in its queue, behind which this waits."""
        caught_up = asyncio.Event()
        if self.prompt.call_later(caught_up.set):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(caught_up.wait(), CATCH_UP_S)

    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        await self.send(event.text)

    @notifies_failures
    async def send(self, text: str) -> None:
        """Save the user's message and start the reply; when it cannot be saved it stays in the input.
        An edit of a message is saved as a new branch beside it (an edited reply is not answered)."""
        text = text.strip("\n")
        editing = self.editing
        if editing is not None and editing.role == "assistant":
            await self.save_edited_reply(text)
            return
        if not self.can_generate():
            return
        conversation = self.current
        try:
            message = self.store.add_message(
                conversation.id, "user", text, sibling_of=editing.id if editing is not None else None
            )
        except HistoryError as error:
            self.notify(f"Not sent: {error.reason} (your message is kept in the input)", severity="error", timeout=15)
            return
        self.cancel_edit()
        self.prompt.remember(text)
        self.prompt.text = ""
        for welcome in self.query(Welcome):
            await welcome.remove()
        if editing is not None:  # the new branch takes the old one's place on screen; the old one stays stored
            await self.show_new_branch(editing.id, message)
        else:
            await self.reach_the_end()
            if self.log_view.widget_for(message.id) is None:
                await self.log_view.mount(self.widget_for(message))
        self.conversation = self.store.conversation(conversation.id) or conversation
        try:
            await self.start_reply()
        except HistoryError as error:  # the reply's row could not be added: the message is saved, the reply is not
            self.notify(
                f"No reply: {failure_text(error)}. Your message is saved: Ctrl+R asks for the reply again.",
                severity="error",
                timeout=15,
            )
        self.refresh_sidebar()

    async def start_reply(self, continuing: StoredMessage | None = None, sibling_of: int | None = None) -> None:
        """Add the reply's row (or reopen the one to continue) and generate it in a worker thread. What the
        engine refuses before it starts (a prompt that cannot be fitted, a template that does not compile)
        fails this reply in one line, as an error in the engine's thread does."""
        engine, conversation = self.engine, self.current
        assert engine is not None, "can_generate() said yes"
        self.quit_armed = False
        await self.reach_the_end()
        if continuing is None:  # a new reply (or branch) is added first: the reply it replaces is not sent
            stored = self.store.add_message(
                conversation.id,
                "assistant",
                "",
                status=Status.STREAMING,
                model=engine.model_name,
                sibling_of=sibling_of,
            )
        else:
            stored = continuing
        try:
            messages, _, _ = self.model_view(continue_last=continuing is not None)
        except Exception as error:  # noqa: BLE001 - the engine's own words, in one line; the app goes on
            text = failure_text(error) if isinstance(error, HistoryError) else engine_error_text(error)
            await self.reply_refused(stored, continuing is None, text)
            return
        if continuing is not None:  # the reply to continue is sent as it is, then reopened
            self.store.reopen_message(stored.id)
        params = self.chat_settings().sampling_params()
        self.job = ReplyJob(
            engine,
            self.store,
            conversation.id,
            stored.id,
            messages,
            params,
            continue_last=continuing is not None,
            text=stored.content,
            thinking=stored.reasoning,
        )
        self.claims.claim(conversation.id)
        await self.log_view.mount(self.widget_for(stored))  # the job is set: it shows as streaming
        self.log_view.scroll_end(animate=False)
        self.log_view.anchor()
        self.update_context()
        self.generate(self.job)

    async def reply_refused(self, stored: StoredMessage, added: bool, error: str) -> None:
        """The engine refused the conversation before the reply started: a new reply's row is finished as an
        error (not left streaming), a reply to continue stays as it was."""
        if added:
            self.store.finish_message(stored.id, "", Status.ERROR, None, error)
            stored = self.store.message(stored.id) or stored
        await self.log_view.mount(self.widget_for(stored))
        self.log_view.scroll_end(animate=False)
        self.reply_ended_at = time.monotonic()
        self.notify(f"The reply failed: {error}", severity="error", timeout=10)
        self.update_context()

    @work(thread=True, group="reply")
    def generate(self, job: ReplyJob) -> None:
        job.run(self.post_message)

    async def on_reply_piece(self, event: ReplyPiece) -> None:
        widget = self.log_view.widget_for(event.message_id)
        if isinstance(widget, AssistantMessage):
            await widget.append(event.text, event.end)

    def on_reply_thinking(self, event: ReplyThinking) -> None:
        widget = self.log_view.widget_for(event.message_id)
        if isinstance(widget, AssistantMessage):
            widget.append_thinking(event.text, event.end)

    def on_reply_save_failed(self, event: ReplySaveFailed) -> None:
        self.notify(f"{event.reason}. The reply goes on and stays on screen.", severity="error", timeout=15)

    @notifies_failures
    async def on_reply_done(self, event: ReplyDone) -> None:
        job = event.job
        if self.job is job:
            self.job = None
        self.reply_ended_at = time.monotonic()
        self.claims.keep_only(self.conversations_written())
        if job.unsaved:
            self.unsaved.append(job)
        widget = self.log_view.widget_for(job.message_id)
        if isinstance(widget, AssistantMessage):
            await widget.finish(job.text, job.status, job.stats, job.error, job.thinking)
        if job.error:
            self.notify(f"The reply failed: {job.error}", severity="error", timeout=10)
        for notice in (job.stats or {}).get("notices", []):
            dropped = DROPPED_NOTICE.match(notice)
            if dropped is None:
                self.notify(notice, severity="information")
            elif job.conversation_id not in self.told_dropped:
                self.told_dropped.add(job.conversation_id)
                self.notify(dropped_text(int(dropped.group(1))), severity="information")
        self.update_context()
        await self.trim_log()
        if self.wanted_spec() != self.chat_app.loaded_spec:
            self.load_wanted_model()

    async def trim_log(self) -> None:
        """Keep at most MOST_MOUNTED messages mounted while the user reads the end: the oldest go
        (they load again on scrolling up), so a long session lays out as fast as a short one."""
        log = self.log_view
        mounted = log.message_widgets()
        if len(mounted) > MOST_MOUNTED and log.is_vertical_scroll_end:
            await log.remove_children(mounted[: len(mounted) - MOST_MOUNTED])
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
        self.job.cancel()
        workers = [w for w in self.workers if w.group == "reply"]
        for worker in workers:
            try:
                await asyncio.wait_for(worker.wait(), timeout)
            except Exception:  # noqa: BLE001 - quitting must not fail
                pass

    def on_unmount(self) -> None:
        if self.job is not None:
            self.job.cancel()
        self.claims.release_all()

    @notifies_failures
    def update_context(self) -> None:
        bars = self.query(ContextBar)
        if not bars:
            return  # the app is closing
        bar = bars.first()
        engine = self.engine
        if engine is None or self.conversation is None:
            loading = "loading model…" if engine is None else ""
            bar.show_text("no model loaded" if self.chat_app.load_error else loading)
            return
        reserve = engine.default_reserve(self.chat_settings().sampling_params())
        try:
            _, fitted, not_read = self.model_view()
        except EngineBusy:
            return  # a reply is streaming; the bar is updated when it ends
        except Exception as error:  # noqa: BLE001 - e.g. a template that refuses this conversation
            bar.show_text(f"context: {error}")
            return
        dropped = fitted.dropped_messages + not_read
        bar.show(fitted.size, reserve, engine.context_length, dropped, engine.model_name, engine.trained_context_length)
        self.mark_dropped_messages(dropped)

    def mark_dropped_messages(self, dropped: int) -> None:
        """Dim the mounted messages that no longer fit in the context."""
        sent = [w for w in self.log_view.message_widgets() if w.content and w.status not in NOT_SENT_TO_MODEL]
        mounted = self.log_view.message_widgets()
        if self.has_later and mounted:  # opened far back: what is above is counted, not what is mounted
            above = self.store.message_count(self.current.id, before=mounted[0].message_id)
        else:
            above = self.store.message_count(self.current.id) - len(mounted)  # each of those was dropped first
        for index, widget in enumerate(sent):
            widget.set_out_of_context(index + above < dropped)

    # --- actions (each one has a key and a command palette entry) ---

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # the command palette lists these over a dialog too; there they do nothing
        # (not self.is_current: that holds for a screen seen behind a dialog)
        return action not in CHAT_ACTIONS or self.app.screen is self

    def action_stop(self) -> bool:
        """Stop the streaming reply (also one whose engine has not started yet); with none streaming, leave
        an edit (Ctrl+L) unsaved. False when neither happened, or the reply is stopping already."""
        if self.job is None and self.editing is not None:
            self.cancel_edit()
            self.prompt.text = ""
            self.notify("Edit cancelled: nothing changed")
            return True
        if self.job is None or self.job.cancelled.is_set():
            return False
        self.job.cancel()
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
        """The next or previous conversation in the sidebar's order (newest first), passing over those
        another window has open."""
        ids = [c.id for c in self.sidebar_conversations()]
        open_id = self.current.id
        index = ids.index(open_id) if open_id in ids else -step
        while 0 <= index + step < len(ids):
            index += step
            if not self.claims.held_elsewhere(ids[index]):
                await self.open_conversation(ids[index])
                return

    def action_search(self) -> None:
        self.app.push_screen(CommandPalette(providers=[HistorySearch], placeholder="Search every conversation…"))

    def action_rename(self) -> None:
        conversation = self.current

        async def rename(title: str | None) -> None:
            if title is None:
                return
            with failures_as_notices(self):
                self.store.rename(conversation.id, title)
                if self.current.id == conversation.id:
                    self.conversation = self.store.conversation(conversation.id)
                self.refresh_sidebar()

        self.app.push_screen(TextPromptScreen("Rename this conversation", conversation.title), rename)

    def action_delete_conversation(self) -> None:
        conversation = self.current

        async def delete(confirmed: bool | None) -> None:
            if not confirmed:
                return
            with failures_as_notices(self):
                if self.job is not None and self.job.conversation_id == conversation.id:
                    await self.stop_and_wait()
                self.store.delete(conversation.id)
                self.claims.forget(conversation.id)
                remaining = [c.id for c in self.store.conversations() if not self.claims.held_elsewhere(c.id)]
                await self.open_conversation(remaining[0] if remaining else self.new_conversation().id)

        self.app.push_screen(ConfirmScreen(f"Delete “{conversation.title}” and all its messages?"), delete)

    def action_filter(self) -> None:
        self.query_one(ConversationSidebar).display = True
        self.query_one("#filter").focus()

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one(ConversationSidebar)
        sidebar.display = not sidebar.display

    def action_settings(self) -> None:
        from chatapp.models.resolve import model_spec

        app, conversation = self.chat_app, self.current
        settings = conversation.settings
        current = ConversationSettings(
            self.chat_settings(), settings.get("model", ""), settings.get("backend") or "auto"
        )
        models = [(f"{ref.name} ({ref.source})", model_spec(ref)) for ref in app.model_choices()]

        def save(result: ConversationSettings | None) -> None:
            if result is None:
                return
            with failures_as_notices(self):
                chosen = {"chat": result.chat.to_dict(), "model": result.model, "backend": result.backend}
                self.store.save_settings(conversation.id, chosen)
                if self.current.id == conversation.id:
                    self.conversation = self.store.conversation(conversation.id)
                if result.as_default:
                    app.settings.chat = result.chat
                    try:
                        if app.settings.path is not None:
                            save_chat_defaults(app.settings.path, result.chat)
                        self.notify("Settings saved for this conversation and for new chats")
                    except SettingsError as error:
                        self.notify(f"Saved for this conversation only: {error}", severity="error", timeout=10)
                else:
                    self.notify("Settings saved for this conversation")
                self.update_context()
                if self.job is None and (self.wanted_spec() != app.loaded_spec or result.backend != current.backend):
                    self.load_wanted_model()

        self.app.push_screen(SettingsScreen(current, models, thinking_switch(self.engine)), save)

    def action_models(self) -> None:
        app, conversation = self.chat_app, self.current
        choices = app.model_choices()

        def chosen(spec: str | None) -> None:
            if not spec:
                return
            with failures_as_notices(self):
                self.store.save_settings(conversation.id, {**conversation.settings, "model": spec})
                if self.current.id == conversation.id:
                    self.conversation = self.store.conversation(conversation.id)
                if self.job is None:
                    self.load_wanted_model()
                app.remember_model_path(spec, choices)  # last: a settings file that cannot be written spoils nothing

        self.app.push_screen(ModelPickerScreen(choices, app.loaded_spec or ""), chosen)


def dropped_text(count: int) -> str:
    """The toast for a context that is full, once per conversation (the context bar keeps the count)."""
    verb = "fits" if count == 1 else "fit"
    was = "was" if count == 1 else "were"
    return (
        f"{counted(count, 'earlier message')} no longer {verb} the context and {was} left out "
        "(the context bar counts them from now on)"
    )
