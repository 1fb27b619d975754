"""chatapp: chat, offline, with a GPT trained from scratch."""

__version__ = "0.1.0"
