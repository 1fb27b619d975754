"""Full-text search over every conversation, in the command palette (Ctrl+P, or the search key)."""

from __future__ import annotations

from functools import partial

from textual.command import Hit, Hits, Provider


class HistorySearch(Provider):
    async def search(self, query: str) -> Hits:
        if len(query.strip()) < 2:
            return
        app = self.app
        for rank, hit in enumerate(app.store.search(query, limit=30)):
            yield Hit(
                1.0 - rank / 100,  # the store's order (best match first)
                f"{hit.conversation_title}: {hit.snippet}",
                partial(self.open, hit.conversation_id),
                text=f"{hit.conversation_title} {hit.snippet}",
                help="Open this conversation",
            )

    async def open(self, conversation_id: int) -> None:
        await self.app.chat.open_conversation(conversation_id)
        self.app.chat.prompt.focus()
