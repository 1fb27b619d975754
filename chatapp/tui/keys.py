"""Every key the app answers, in one list: the bindings, the footer and the help screen come from it.

The keys were checked in tmux (3.3a, TERM=xterm-256color) against a focused
TextArea: each arrives in Textual as itself and none is one of TextArea's own
keys (ctrl+k, f6 and f7 are, so they are not used here). alt+enter arrives as
a plain enter and shift+enter is enter in most terminals, so ctrl+j is the
new-line key that works everywhere.
"""

from __future__ import annotations

from textual.binding import Binding

# (key, action, description, shown in the footer). The footer keeps this order, and a narrow terminal
# (60 columns) shows the first four and the palette's key: Help, New chat, Stop reply, Settings.
APP_KEYS = [
    ("f1", "help", "Help", True),
    ("ctrl+n", "new_conversation", "New chat", True),
    ("escape", "stop", "Stop reply", True),
    ("ctrl+c", "stop_or_quit", "Stop reply, or quit when none streams", False),
    ("f2", "settings", "Settings", True),
    ("ctrl+r", "regenerate", "Regenerate", True),
    ("ctrl+l", "edit_message", "Edit a message (a new branch)", False),
    ("ctrl+g", "continue_reply", "Continue reply", False),
    ("alt+left", "previous_branch", "Previous branch of a message", False),
    ("alt+right", "next_branch", "Next branch of a message", False),
    ("f12", "fork", "Fork the chat from a message", False),
    ("f3", "inspect", "Inspector", True),
    ("f5", "toggle_thinking", "Show or hide a reply's thinking", False),
    ("f4", "models", "Models", False),
    ("alt+up", "previous_conversation", "Previous chat in the list", False),
    ("alt+down", "next_conversation", "Next chat in the list", False),
    ("ctrl+o", "search", "Search all chats", False),
    ("ctrl+f", "filter", "Filter chats by title", False),
    ("ctrl+t", "rename", "Rename chat", False),
    ("f8", "delete_conversation", "Delete chat", False),
    ("ctrl+b", "toggle_sidebar", "Sidebar", False),
    ("f9", "copy_message", "Copy reply", False),
    ("shift+f9", "copy_code", "Copy code block", False),
    ("ctrl+s", "export", "Export chat", False),
]

# Keys that must win over the focused widget's own: TextArea and Input copy on ctrl+c, and
# Textual's App answers it with a "press ctrl+q to quit" hint.
PRIORITY_ACTIONS = {"stop_or_quit"}

NEWLINE_KEY = "ctrl+j"

PROMPT_KEYS = [
    ("enter", "Send the message"),
    (NEWLINE_KEY, "New line"),
    ("up", "Earlier prompt (empty input)"),
    ("ctrl+p", "Every action (palette)"),
    ("ctrl+q", "Quit"),
]


def app_bindings() -> list[Binding]:
    return [
        Binding(key, action, description, show=shown, priority=action in PRIORITY_ACTIONS)
        for key, action, description, shown in APP_KEYS
    ]


def key_for(action: str) -> str:
    """The key of an action in APP_KEYS, as the help screen writes it."""
    return next(key for key, name, _, _ in APP_KEYS if name == action)
