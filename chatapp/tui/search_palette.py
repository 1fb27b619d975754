"""Full-text search over every conversation, in the command palette (Ctrl+P, or the search key)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import Hit, Hits, Provider
from textual.content import Content

from chatapp.history import HistoryError

if TYPE_CHECKING:
    from chatapp.tui.host import ChatHost


class HistorySearch(Provider):
    @property
    def chat_app(self) -> ChatHost:
        return cast("ChatHost", self.app)

    async def search(self, query: str) -> Hits:
        if len(query.strip()) < 2:
            return
        try:
            hits = self.chat_app.store.search(query, limit=30)
        except HistoryError as error:  # a history that cannot be read finds nothing, and says why
            yield Hit(0.0, Content(f"The history cannot be searched: {error.reason}"), self.nothing, text=error.reason)
            return
        for rank, hit in enumerate(hits):
            shown = hit.conversation_title if hit.message_id is None else f"{hit.conversation_title}: {hit.snippet}"
            yield Hit(
                1.0 - rank / 100,  # the store's order (best match first)
                Content(shown),  # plain text: a "[" in a message is not markup
                partial(self.open, hit.conversation_id, hit.message_id),
                text=shown,
                help="Open this conversation",
            )

    async def open(self, conversation_id: int, message_id: int | None) -> None:
        """The conversation, on the branch of the message that matched, scrolled to it and marked."""
        await self.chat_app.open_conversation(conversation_id, message_id)

    def nothing(self) -> None:
        pass
