"""Every key the app answers, in one list: the bindings, the footer and the help screen come from it."""

from __future__ import annotations

from textual.binding import Binding

# (key, action, description, shown in the footer)
APP_KEYS = [
    ("f1", "help", "Help", True),
    ("ctrl+n", "new_conversation", "New chat", True),
    ("escape", "stop", "Stop reply", True),
    ("ctrl+r", "regenerate", "Regenerate", True),
    ("ctrl+l", "edit_last", "Edit last message", False),
    ("ctrl+g", "continue_reply", "Continue reply", False),
    ("f2", "settings", "Settings", True),
    ("f3", "inspect", "Inspector", True),
    ("f4", "models", "Models", False),
    ("ctrl+t", "rename", "Rename chat", False),
    ("f8", "delete_conversation", "Delete chat", False),
    ("ctrl+f", "filter", "Filter chats", False),
    ("ctrl+b", "toggle_sidebar", "Sidebar", False),
    ("f9", "copy_message", "Copy reply", False),
    ("shift+f9", "copy_code", "Copy code block", False),
    ("ctrl+s", "export", "Export chat", False),
]

PROMPT_KEYS = [
    ("enter", "Send the message"),
    ("shift+enter / ctrl+j", "New line"),
    ("up (empty input)", "Recall an earlier prompt"),
    ("ctrl+p", "Command palette: every action"),
    ("ctrl+q", "Quit"),
]


def app_bindings() -> list[Binding]:
    return [Binding(key, action, description, show=shown) for key, action, description, shown in APP_KEYS]
