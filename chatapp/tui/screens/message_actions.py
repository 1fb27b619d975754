"""What the chat screen does to its messages: regenerate (a new version), step between
versions, edit the last message, continue a reply, copy, export, inspect.

The base of ChatScreen (screens/chat.py), which supplies the store, the engine, the
log and the open conversation (what it supplies is declared below, for the type
checker); kept apart so that each file reads in one sitting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.screen import Screen
from textual.widgets import TextArea

from chatapp.history import CONTINUABLE, HistoryError, StoredMessage
from chatapp.paths import data_dir
from chatapp.tui.clipboard import copy_text
from chatapp.tui.export import export_files
from chatapp.tui.failures import failure_text
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


class MessageActions(Screen[None]):
    if TYPE_CHECKING:  # what ChatScreen supplies
        job: ReplyJob | None
        editing: StoredMessage | None

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
        async def start_reply(self, continuing: StoredMessage | None = None, version_of: int | None = None) -> None: ...
        def widget_for(self, message: StoredMessage) -> ChatMessage: ...
        def update_context(self) -> None: ...
        def chat_settings(self) -> ChatDefaults: ...

    def last_message(self, role: str | None = None) -> StoredMessage | None:
        """The newest message (of that role): found among the newest ones, without reading the whole conversation."""
        recent = self.store.messages(self.current.id, limit=RECENT)
        return next((m for m in reversed(recent) if role is None or m.role == role), None)

    async def remove_from(self, message: StoredMessage) -> None:
        self.store.delete_messages_from(self.current.id, message.id)
        for widget in self.log_view.message_widgets():
            if widget.message_id >= message.id:
                await widget.remove()

    async def action_regenerate(self) -> None:
        """A new version of the last reply; the earlier ones are kept (Alt+Left/Right step between them)."""
        last = self.last_message()
        if last is None or last.role == "system" or not self.can_generate():
            return
        if last.role != "assistant":
            await self.start_reply()
            return
        widget = self.log_view.widget_for(last.id)
        if widget is not None:
            await widget.remove()
        try:
            await self.start_reply(version_of=last.id)
        except HistoryError as error:  # no new version could be added: the one there was stays
            await self.log_view.mount(self.widget_for(last))
            self.notify(f"No new version: {failure_text(error)}", severity="error", timeout=15)

    async def action_edit_last(self) -> None:
        """Put the last message back in the input; it (and its reply) is replaced only when the edit is sent."""
        last = self.last_message("user")
        if last is None or self.job is not None:
            return
        self.editing = last
        for widget in self.log_view.message_widgets():
            widget.set_class(widget.message_id >= last.id, "being-edited")
        self.prompt.text = last.content
        self.prompt.move_cursor(self.prompt.document.end)
        self.prompt.focus()
        self.notify(
            "Editing your last message: Enter sends it in place of the old one and its reply; "
            "clearing the input cancels",
            timeout=6,
        )

    def cancel_edit(self) -> None:
        if self.editing is None:
            return
        self.editing = None
        for widget in self.query(".being-edited"):
            widget.remove_class("being-edited")

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        if event.text_area is self.query_one(PromptInput) and not event.text_area.text.strip():
            self.cancel_edit()

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

    async def action_previous_version(self) -> None:
        await self.step_version(-1)

    async def action_next_version(self) -> None:
        await self.step_version(+1)

    async def step_version(self, step: int) -> None:
        """Show an earlier or later version of the selected reply; the one shown is what the model is sent."""
        widget = self.selected_message("assistant")
        if widget is None:
            return
        if self.job is not None and self.job.message_id == widget.message_id:
            self.notify("That reply is still streaming")
            return
        ids = [version.id for version in self.store.versions(widget.message_id)]
        index = ids.index(widget.message_id) + step if widget.message_id in ids else -1
        if not 0 <= index < len(ids):
            self.notify(
                "This reply has only one version (Ctrl+R makes another)"
                if len(ids) < 2
                else f"No {'earlier' if step < 0 else 'later'} version"
            )
            return
        shown = self.widget_for(self.store.show_version(ids[index]))
        had_focus = widget.has_focus
        await self.log_view.mount(shown, after=widget)
        await widget.remove()
        if had_focus:
            shown.focus()
        self.update_context()

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
        try:
            paths = export_files(data_dir() / "exports", self.current, self.store.messages(self.current.id))
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
