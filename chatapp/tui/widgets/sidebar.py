"""Conversations, newest first, with a filter box."""

from __future__ import annotations

from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from chatapp.history import StoredConversation


class ConversationSidebar(Vertical):
    class Selected(Message):
        def __init__(self, conversation_id: int):
            super().__init__()
            self.conversation_id = conversation_id

    class FilterChanged(Message):
        def __init__(self, text: str):
            super().__init__()
            self.text = text

    def compose(self):
        yield Label("Conversations", classes="title")
        yield Input(placeholder="Filter (Ctrl+F)", id="filter")
        yield OptionList(id="conversations")

    def show(self, conversations: list[StoredConversation], current_id: int | None) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        options.add_options([Option(c.title, id=str(c.id)) for c in conversations])
        ids = [c.id for c in conversations]
        if current_id in ids:
            options.highlighted = ids.index(current_id)

    def titles(self) -> list[str]:
        options = self.query_one(OptionList)
        return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.post_message(self.Selected(int(event.option.id)))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.FilterChanged(event.value))
