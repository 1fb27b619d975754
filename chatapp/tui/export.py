"""A conversation as Markdown or JSON."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from chatapp.history import Status, StoredConversation, StoredMessage

ROLE_HEADINGS = {"system": "System", "user": "You", "assistant": "Assistant"}


def to_markdown(conversation: StoredConversation, messages: list[StoredMessage]) -> str:
    lines = [f"# {conversation.title}", ""]
    for message in messages:
        heading = ROLE_HEADINGS[message.role]
        if message.status not in (Status.COMPLETE, Status.STREAMING):
            heading += f" ({message.status})"
        lines += [f"## {heading}", "", message.content, ""]
    return "\n".join(lines)


def to_json(conversation: StoredConversation, messages: list[StoredMessage]) -> str:
    def when(timestamp: float) -> str:
        return datetime.fromtimestamp(timestamp, timezone.utc).isoformat()

    return json.dumps({
        "title": conversation.title,
        "created_at": when(conversation.created_at),
        "settings": conversation.settings,
        "messages": [
            {"role": m.role, "content": m.content, "status": m.status, "stats": m.stats, "created_at": when(m.created_at)}
            for m in messages
        ],
    }, indent=2, ensure_ascii=False)


def export_files(folder: Path, conversation: StoredConversation, messages: list[StoredMessage]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", conversation.title.lower()).strip("-")[:40] or "conversation"
    stem = folder / f"{conversation.id}-{slug}"
    markdown, data = stem.with_suffix(".md"), stem.with_suffix(".json")
    markdown.write_text(to_markdown(conversation, messages), encoding="utf-8")
    data.write_text(to_json(conversation, messages), encoding="utf-8")
    return [markdown, data]
