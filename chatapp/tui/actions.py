"""What the keys do: every action of the chat app (each has a key and a command palette entry).

A mixin of ChatApp (chatapp/tui/app.py), which holds the state these use:
store, conversation, engine, job, settings.
"""

from __future__ import annotations

import asyncio

from chatapp.history import CONTINUABLE, StoredMessage
from chatapp.paths import data_dir
from chatapp.settings import save_value
from chatapp.tui.export import export_files
from chatapp.tui.screens.dialogs import ConfirmScreen, TextPromptScreen
from chatapp.tui.screens.help import HelpScreen
from chatapp.tui.screens.inspector import InspectorScreen
from chatapp.tui.screens.models import ModelPickerScreen
from chatapp.tui.screens.settings import ConversationSettings, SettingsScreen
from chatapp.tui.widgets.messages import AssistantMessage, ChatMessage
from chatapp.tui.widgets.sidebar import ConversationSidebar


class ChatActions:
    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_stop(self) -> None:
        if self.job is not None and self.engine is not None:
            self.job.backend.cancel()

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

    async def action_quit(self) -> None:
        await self.stop_and_wait()
        self.exit()

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
        self.push_screen(TextPromptScreen("Rename this conversation", self.conversation.title), rename)

    def action_delete_conversation(self) -> None:
        async def delete(confirmed: bool | None) -> None:
            if not confirmed:
                return
            if self.job is not None and self.job.conversation_id == self.conversation.id:
                await self.stop_and_wait()
            self.store.delete(self.conversation.id)
            remaining = self.store.conversations()
            await self.open_conversation(remaining[0].id if remaining else self.new_conversation().id)
        self.push_screen(ConfirmScreen(f"Delete “{self.conversation.title}” and all its messages?"), delete)

    def action_filter(self) -> None:
        sidebar = self.main_screen.query_one(ConversationSidebar)
        sidebar.display = True
        self.main_screen.query_one("#filter").focus()

    def action_toggle_sidebar(self) -> None:
        sidebar = self.main_screen.query_one(ConversationSidebar)
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
        self.copy_to_clipboard(message.content)
        self.notify("Copied the message")

    def action_copy_code(self) -> None:
        message = self.selected_message("assistant")
        blocks = message.code_blocks() if isinstance(message, AssistantMessage) else []
        if not blocks:
            self.notify("No code block in that reply")
            return
        self.copy_to_clipboard(blocks[-1])
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
        self.push_screen(InspectorScreen(list(steps), text))

    def model_choices(self):
        from chatapp.model_discovery import discover_models

        return discover_models(self.settings.extra_paths)

    def action_settings(self) -> None:
        from chatapp.model_discovery import model_spec

        settings = self.conversation.settings
        current = ConversationSettings(self.chat_settings(), settings.get("model", ""), settings.get("backend") or "auto")
        models = [(f"{ref.name} ({ref.source})", model_spec(ref)) for ref in self.model_choices()]

        def save(result: ConversationSettings | None) -> None:
            if result is None:
                return
            self.store.save_settings(self.conversation.id, {"chat": result.chat.to_dict(), "model": result.model, "backend": result.backend})
            self.conversation = self.store.conversation(self.conversation.id)
            self.notify("Settings saved for this conversation")
            self.update_context()
            if self.job is None and (self.wanted_spec() != self.loaded_spec or result.backend != current.backend):
                self.start_loading(self.wanted_spec())
        self.push_screen(SettingsScreen(current, models), save)

    def action_models(self) -> None:
        def chosen(spec: str | None) -> None:
            if not spec:
                return
            known = {str(ref.path) for ref in self.model_choices()} | {ref.name for ref in self.model_choices()}
            if spec not in known and spec not in self.settings.extra_paths:
                self.settings.extra_paths.append(spec)
                if self.settings.path is not None:
                    save_value(self.settings.path, "model", "extra_paths", self.settings.extra_paths)
            self.store.save_settings(self.conversation.id, {**self.conversation.settings, "model": spec})
            self.conversation = self.store.conversation(self.conversation.id)
            if self.job is None:
                self.start_loading(spec)
        self.push_screen(ModelPickerScreen(self.model_choices(), self.loaded_spec or ""), chosen)

