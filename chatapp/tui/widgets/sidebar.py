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

    _shown: tuple | None = None  # what the list shows now: ([(id, title)], more)

    def compose(self):
        yield Label("Conversations", classes="title")
        yield Input(placeholder="Filter (Ctrl+F)", id="filter")
        yield OptionList(id="conversations")

    def show(self, conversations: list[StoredConversation], current_id: int | None, more: int = 0) -> None:
        """The list, rebuilt only when it changed (a long one takes a while); `more`: conversations
        left out of it, which the filter still finds."""
        shown = ([(c.id, c.title) for c in conversations], more)
        options = self.query_one(OptionList)
        if shown != self._shown:
            self._shown = shown
            options.clear_options()
            options.add_options([Option(c.title, id=str(c.id)) for c in conversations])
            if more:
                options.add_option(Option(f"… {more:,} older: type in the filter to find them", disabled=True))
        ids = [c.id for c in conversations]
        if current_id in ids:
            options.highlighted = ids.index(current_id)

    def titles(self) -> list[str]:
        options = self.query_one(OptionList)
        return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.Selected(int(event.option.id)))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.FilterChanged(event.value))
