"""A plain terminal chat loop: for pipes and terminals where the TUI is not wanted."""

from __future__ import annotations

import sys

from model.backend import Finished, TextPiece
from model.chat_format import Message
from model.sampling import SamplingParams

HELP = "Type a message and press Enter. /new starts over, /quit (or Ctrl+D) leaves; Ctrl+C stops a reply."


def chat_loop(backend, params: SamplingParams, read=input, out=sys.stdout) -> int:
    out.write(f"chatapp: {backend.model_name} ({backend.name}, context {backend.context_length} tokens). {HELP}\n")
    messages: list[Message] = []
    while True:
        try:
            line = read("you> ")
        except EOFError:
            out.write("\n")
            return 0
        except KeyboardInterrupt:
            out.write("\n")
            return 0
        command = line.strip()
        if not command:
            continue
        if command in ("/quit", "/exit"):
            return 0
        if command == "/new":
            messages = []
            out.write("(new conversation)\n")
            continue
        messages.append(Message("user", line))
        out.write("bot> ")
        reply = []
        try:
            for event in backend.chat(messages, params):
                if isinstance(event, TextPiece):
                    reply.append(event.text)
                    out.write(event.text)
                    out.flush()
                elif isinstance(event, Finished):
                    for notice in event.notices:
                        out.write(f"\n(note: {notice})")
        except KeyboardInterrupt:
            backend.cancel()
            out.write(" [stopped]")
        out.write("\n")
        messages.append(Message("assistant", "".join(reply)))
