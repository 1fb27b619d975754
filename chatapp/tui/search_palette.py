"""Full-text search over every conversation, in the command palette (Ctrl+P, or the search key)."""

from __future__ import annotations

from functools import partial

from textual.command import Hit, Hits, Provider
from textual.content import Content


class HistorySearch(Provider):
    async def search(self, query: str) -> Hits:
        if len(query.strip()) < 2:
            return
        app = self.app
        for rank, hit in enumerate(app.store.search(query, limit=30)):
            shown = hit.conversation_title if hit.message_id is None else f"{hit.conversation_title}: {hit.snippet}"
            yield Hit(
                1.0 - rank / 100,  # the store's order (best match first)
                Content(shown),  # plain text: a "[" in a message is not markup
                partial(self.open, hit.conversation_id),
                text=shown,
                help="Open this conversation",
            )

    async def open(self, conversation_id: int) -> None:
        await self.app.chat.open_conversation(conversation_id)
        self.app.chat.prompt.focus()
