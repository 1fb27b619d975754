"""What the chat screen does to its messages: edit or regenerate from any message (a new
branch beside it; the old branch stays), step between branches, fork the conversation
from a message, continue a reply, copy, export, inspect.

A message is the selected one (focused: Tab or the mouse), else the last one of its kind.

The base of ChatScreen (screens/chat.py), which supplies the store, the engine, the
log and the open conversation (what it supplies is declared below, for the type
checker); kept apart so that each file reads in one sitting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.screen import Screen

from chatapp.history import CONTINUABLE, HistoryError, Status, StoredMessage
from chatapp.paths import data_dir
from chatapp.tui.clipboard import copy_text
from chatapp.tui.export import export_files
from chatapp.tui.failures import failure_text, notifies_failures
from chatapp.tui.screens.inspector import InspectorScreen
from chatapp.tui.widgets.messages import AssistantMessage, ChatMessage
from chatapp.tui.widgets.prompt import PromptInput

if TYPE_CHECKING:
    from chatapp.history import HistoryStore, StoredConversation
    from chatapp.settings import ChatDefaults
    from chatapp.tui.generation import ReplyJob
    from chatapp.tui.widgets.messages import ChatLog
    from model.inference.backend import Backend

RECENT = 20  # the newest messages, where the last message of a role is looked for
PAGE_SIZE = 20  # messages mounted when a conversation opens, and each time the user scrolls to the top or end


class MessageActions(Screen[None]):
    if TYPE_CHECKING:  # what ChatScreen supplies
        job: ReplyJob | None
        editing: StoredMessage | None
        has_later: bool

        @property
        def store(self) -> HistoryStore: ...
        @property
        def engine(self) -> Backend | None: ...
        @property
        def current(self) -> StoredConversation: ...
        @property
        def log_view(self) -> ChatLog: ...
        @property
        def prompt(self) -> PromptInput: ...
        def can_generate(self) -> bool: ...
        async def start_reply(self, continuing: StoredMessage | None = None, sibling_of: int | None = None) -> None: ...
        def widget_for(self, message: StoredMessage) -> ChatMessage: ...
        def update_context(self) -> None: ...
        def chat_settings(self) -> ChatDefaults: ...
        async def show_messages(self, at: int | None = None, found: bool = False) -> None: ...
        async def open_conversation(self, conversation_id: int, at_message: int | None = None) -> bool: ...

    def last_message(self, role: str | None = None) -> StoredMessage | None:
        """The newest message (of that role): found among the newest ones, without reading the whole conversation."""
        recent = self.store.messages(self.current.id, limit=RECENT)
        return next((m for m in reversed(recent) if role is None or m.role == role), None)

    async def remove_widgets_from(self, message_id: int) -> None:
        """Take the message's widget and every one after it off the screen (a new branch replaces them)."""
        widgets = self.log_view.message_widgets()
        position = next((i for i, w in enumerate(widgets) if w.message_id == message_id), len(widgets))
        await self.log_view.remove_children(widgets[position:])
        self.has_later = False  # what follows is the new branch's, mounted by the caller

    async def show_new_branch(self, replaced_id: int, new: StoredMessage) -> None:
        """The new branch's first message in place of the one it branched from, and of all after it (or the
        whole log shown again, where that one is no longer mounted)."""
        if self.log_view.widget_for(replaced_id) is None:
            await self.show_messages()
            return
        await self.remove_widgets_from(replaced_id)
        await self.log_view.mount(self.widget_for(new))
        self.log_view.scroll_end(animate=False)
        self.log_view.anchor()

    def selected_stored(self, unselected_role: str | None = None) -> StoredMessage | None:
        """The selected message, else the newest one (of that role), as stored."""
        widget = self.focused
        if isinstance(widget, ChatMessage):
            return self.store.message(widget.message_id)
        return self.last_message(unselected_role)

    def streaming_here(self) -> bool:
        """A reply streams into the open conversation: its branch must not change under it."""
        if self.job is not None and self.job.conversation_id == self.current.id:
            self.notify("A reply is still streaming: Esc or Ctrl+C stops it", severity="warning")
            return True
        return False

    async def action_regenerate(self) -> None:
        """A new reply in place of the selected one (or to the selected message of yours), as a new branch:
        the old reply, and all that followed it, stay (Alt+Left/Right step between them)."""
        target = self.selected_stored()
        if target is None or target.role == "system" or not self.can_generate():
            return
        replaced = target if target.role == "assistant" else self.reply_to(target)
        if replaced is None:  # the last message is the user's: its reply is simply asked for
            await self.start_reply()
            return
        await self.remove_widgets_from(replaced.id)
        try:
            await self.start_reply(sibling_of=replaced.id)
        except HistoryError as error:  # no new branch could be added: the one there was stays
            await self.show_messages()
            self.notify(f"No new version of the reply: {failure_text(error)}", severity="error", timeout=15)

    def reply_to(self, message: StoredMessage) -> StoredMessage | None:
        """The message after this one in the shown branch (its reply), if any."""
        following = self.store.messages(self.current.id, since=message.id, limit=2)
        return following[1] if len(following) == 2 and following[0].id == message.id else None

    async def action_edit_message(self) -> None:
        """Put the selected message (else your last one) back in the input; Enter saves the edit as a new
        branch beside it (a message of yours is then answered again); the old branch stays."""
        target = self.selected_stored("user")
        if target is None or target.role == "system" or target.status == Status.STREAMING or self.streaming_here():
            return
        self.editing = target
        widgets = self.log_view.message_widgets()
        position = next((i for i, w in enumerate(widgets) if w.message_id == target.id), len(widgets))
        for index, widget in enumerate(widgets):
            widget.set_class(index >= position, "being-edited")
        self.prompt.text = target.content
        self.prompt.move_cursor(self.prompt.document.end)
        self.prompt.focus()
        whose = "your message" if target.role == "user" else "this reply"
        self.notify(
            f"Editing {whose}: Enter saves it as a new branch (the old one stays: Alt+Left/Right); Esc cancels",
            timeout=6,
        )

    async def save_edited_reply(self, text: str) -> None:
        """An edited reply becomes a new branch beside the old one; nothing is generated."""
        editing = self.editing
        if editing is None or self.streaming_here():
            return
        try:
            edited = self.store.add_message(
                self.current.id, "assistant", text, model=editing.model, sibling_of=editing.id
            )
        except HistoryError as error:
            self.notify(f"Not saved: {failure_text(error)} (your edit is kept in the input)", severity="error")
            return
        self.cancel_edit()
        self.prompt.text = ""
        await self.show_new_branch(editing.id, edited)
        self.update_context()

    def cancel_edit(self) -> None:
        if self.editing is None:
            return
        self.editing = None
        for widget in self.query(".being-edited"):
            widget.remove_class("being-edited")

    async def action_continue_reply(self) -> None:
        last = self.last_message()
        if last is None or last.role != "assistant" or last.status not in CONTINUABLE:
            self.notify("Only a reply that stopped before its end can be continued")
            return
        if not self.can_generate():
            return
        engine = self.engine
        if engine is None or not engine.supports_continue:
            self.notify(
                f"The {engine.name if engine else 'current'} backend cannot continue a reply yet", severity="warning"
            )
            return
        widget = self.log_view.widget_for(last.id)
        if widget is not None:
            await widget.remove()
        try:
            await self.start_reply(continuing=last)
        except HistoryError as error:  # it could not be reopened: it stays as it was
            await self.log_view.mount(self.widget_for(last))
            self.notify(f"Not continued: {failure_text(error)}", severity="error", timeout=15)

    async def action_previous_branch(self) -> None:
        await self.step_branch_of(self.branch_target(), -1)

    async def action_next_branch(self) -> None:
        await self.step_branch_of(self.branch_target(), +1)

    @notifies_failures
    async def on_chat_message_step_branch(self, event: ChatMessage.StepBranch) -> None:
        await self.step_branch_of(self.log_view.widget_for(event.message_id), event.step)

    def branch_target(self) -> ChatMessage | None:
        """The selected message, else the newest one."""
        focused = self.focused
        if isinstance(focused, ChatMessage):
            return focused
        widgets = self.log_view.message_widgets()
        return widgets[-1] if widgets else None

    async def step_branch_of(self, widget: ChatMessage | None, step: int) -> None:
        """Show the branch before or after this message's: the rest of the conversation follows it, and what
        is shown is what the model is sent."""
        if widget is None or self.streaming_here():
            return
        ids = [branch.id for branch in self.store.branches(widget.message_id)]
        index = ids.index(widget.message_id) + step if widget.message_id in ids else -1
        if not 0 <= index < len(ids):
            self.notify(
                "This message has no other branch (Ctrl+L edits it, Ctrl+R answers it again)"
                if len(ids) < 2
                else f"No {'earlier' if step < 0 else 'later'} branch"
            )
            return
        shown = self.store.show_branch(ids[index])
        had_focus = widget.has_focus
        tail = self.store.messages(self.current.id, since=shown.id, limit=PAGE_SIZE + 1)
        following = [self.widget_for(m) for m in tail[:PAGE_SIZE]]
        await self.remove_widgets_from(widget.message_id)
        self.has_later = len(tail) > PAGE_SIZE  # a long branch pages in as the user scrolls down
        await self.log_view.mount_all(following)
        if had_focus and following:
            following[0].focus()
        self.update_context()

    async def action_fork(self) -> None:
        """A new conversation holding this branch up to the selected message (else all of it), opened."""
        target = self.selected_stored()
        if target is None:
            self.notify("Nothing to fork yet")
            return
        if target.status == Status.STREAMING:
            self.notify("That reply is still streaming", severity="warning")
            return
        try:
            fork = self.store.fork(target.id)
        except HistoryError as error:
            self.notify(f"Not forked: {failure_text(error)}", severity="error", timeout=10)
            return
        if await self.open_conversation(fork.id):
            self.notify(f"Forked into “{fork.title}”: the original conversation is unchanged")

    def selected_message(self, role: str | None = None) -> ChatMessage | None:
        focused = self.focused
        if isinstance(focused, ChatMessage) and (role is None or focused.role == role):
            return focused
        widgets = [w for w in self.log_view.message_widgets() if role is None or w.role == role]
        return widgets[-1] if widgets else None

    def action_copy_message(self) -> None:
        message = self.selected_message()
        if message is not None:
            self.notify(copy_text(self.app, message.content))

    def action_copy_code(self) -> None:
        message = self.selected_message("assistant")
        blocks = message.code_blocks() if isinstance(message, AssistantMessage) else []
        if not blocks:
            self.notify("No code block in that reply")
            return
        self.notify(copy_text(self.app, blocks[-1]))

    def action_export(self) -> None:
        """Markdown of the shown branch, JSON of the whole tree."""
        conversation = self.current
        try:
            paths = export_files(
                data_dir() / "exports",
                conversation,
                self.store.messages(conversation.id),
                self.store.every_branch(conversation.id),
            )
        except OSError as error:
            self.notify(f"Not exported: {error.strerror or error}", severity="error", timeout=10)
            return
        self.notify("Exported to " + " and ".join(str(p) for p in paths), timeout=10)

    def action_toggle_thinking(self) -> None:
        message = self.selected_message("assistant")
        if not (isinstance(message, AssistantMessage) and message.toggle_thinking()):
            self.notify("No thinking in that reply")

    def action_inspect(self) -> None:
        message = self.selected_message("assistant")
        if message is None:
            self.notify("No reply to inspect yet")
            return
        job = self.job if self.job is not None and self.job.message_id == message.message_id else None
        steps = job.inspection if job is not None else (self.store.inspection(message.message_id) or [])
        if not steps:
            self.notify(
                "No token data for this reply: the backend did not report candidates, "
                "or the reply is older than the inspector keeps",
                severity="warning",
            )
            return
        params = self.chat_settings()
        text = f"temperature {params.temperature}, top-k {params.top_k}, top-p {params.top_p}, min-p {params.min_p}"
        self.app.push_screen(InspectorScreen(list(steps), text))
