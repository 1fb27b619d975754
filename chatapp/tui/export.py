"""A conversation as Markdown or JSON, in files only their owner can read (mode 0600, like the history).

Markdown is for reading: the branch the chat shows. JSON keeps the whole tree: every message of every
branch, oldest first, with its id, its parent's id (the message before it in its branch) and whether it is
on the shown branch; the messages with "shown" true, in order, are the conversation as it reads."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from chatapp.history import Status, StoredConversation, StoredMessage

ROLE_HEADINGS = {"system": "System", "user": "You", "assistant": "Assistant"}


def to_markdown(conversation: StoredConversation, messages: list[StoredMessage]) -> str:
    lines = [f"# {conversation.title}", ""]
    for message in messages:
        heading = (
            (message.model or ROLE_HEADINGS[message.role])
            if message.role == "assistant"
            else ROLE_HEADINGS[message.role]
        )
        if message.status not in (Status.COMPLETE, Status.STREAMING):
            heading += f" ({message.status})"
        lines += [f"## {heading}", ""]
        if message.reasoning:  # a reasoning model's thinking: collapsed where Markdown renders HTML (GitHub)
            lines += ["<details><summary>Thinking</summary>", "", message.reasoning.strip("\n"), "", "</details>", ""]
        lines += [message.content, ""]
    return "\n".join(lines)


def to_json(conversation: StoredConversation, messages: list[StoredMessage]) -> str:
    """The conversation with the messages given: the whole tree (HistoryStore.every_branch), or one branch."""

    def when(timestamp: float) -> str:
        return datetime.fromtimestamp(timestamp, timezone.utc).isoformat()

    return json.dumps(
        {
            "title": conversation.title,
            "created_at": when(conversation.created_at),
            "settings": conversation.settings,
            "messages": [
                {
                    "id": m.id,
                    "parent_id": m.parent_id,
                    "shown": m.shown,
                    "role": m.role,
                    "content": m.content,
                    **({"thinking": m.reasoning} if m.reasoning else {}),
                    "status": m.status,
                    "stats": m.stats,
                    "created_at": when(m.created_at),
                }
                for m in messages
            ],
        },
        indent=2,
        ensure_ascii=False,
    )


def export_files(
    folder: Path,
    conversation: StoredConversation,
    messages: list[StoredMessage],
    tree: list[StoredMessage] | None = None,
) -> list[Path]:
    """Markdown of the shown branch (messages), JSON of the whole tree (else of the same messages)."""
    folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", conversation.title.lower()).strip("-")[:40] or "conversation"
    stem = folder / f"{conversation.id}-{slug}"
    markdown, data = stem.with_suffix(".md"), stem.with_suffix(".json")
    write_private(markdown, to_markdown(conversation, messages))
    write_private(data, to_json(conversation, messages if tree is None else tree))
    return [markdown, data]


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, as the history is: created 0600, never readable by others meanwhile."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an earlier export may have left it readable by others
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
