"""What rendering a long conversation through a foreign chat template costs: Qwen3's template
(tests/data/chat_templates/Qwen-Qwen3-0.6B.jinja), a 200-turn conversation (100 user messages,
100 replies, some with thinking apart), rendered by model.text.chat_template.TemplateFormat.

    .venv/bin/python scripts/bench_chat_template.py               # 200 turns
    .venv/bin/python scripts/bench_chat_template.py --turns 1000

Goal (issue 23): a 200-turn render costs at most 20 ms. Timed: the template's text alone
(`prompt_text`), text to ids (`render`, with a one-id-a-character vocabulary, so the time is
chatapp's, not a tokenizer's), and `fit` to a context that holds only the newest turns (it must
not render the whole history once per dropped turn: the renders are counted). Each timing is the
median of repeated runs with the render cache cleared; the render is also timed without the time
limit, whose per-thread trace function is most of its cost. Not a test: it prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.text import chat_template  # noqa: E402
from model.text.chat_format import Message  # noqa: E402
from model.text.chat_template import TemplateFormat  # noqa: E402
from tests.helpers.char_vocab import CharVocab  # noqa: E402

TEMPLATE = ROOT / "tests" / "data" / "chat_templates" / "Qwen-Qwen3-0.6B.jinja"
CONTROL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "</tool_call>"]


def conversation(turns: int) -> list[Message]:
    messages = [Message("system", "You are a helpful assistant. Answer briefly.")]
    for i in range(turns // 2):
        messages.append(Message("user", f"Question {i}: what is {i} times {i + 1}? Explain it in a sentence or two."))
        thinking = f"{i} times {i + 1} is {i * (i + 1)}." if i % 3 == 0 else ""
        messages.append(Message("assistant", f"It is {i * (i + 1)}, since {i} groups of {i + 1} make that.", thinking))
    messages.append(Message("user", "Thanks! And the next one?"))
    return messages


def timed(function, repeat: int) -> tuple[str, Any]:
    """'median (best)' in ms: the best is what it costs on a quiet machine, the median what it did here."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return f"{statistics.median(times) * 1000:7.2f} ms ({min(times) * 1000:6.2f})", result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    chat_format = TemplateFormat(
        CharVocab(CONTROL, eos="<|im_end|>", silent_controls=False), TEMPLATE.read_text(), source=TEMPLATE.name
    )
    messages = conversation(args.turns)

    def fresh(function):
        def run():
            chat_format._rendered.clear()
            return function()

        return run

    text_ms, text = timed(fresh(lambda: chat_format.prompt_text(messages)), args.repeat)
    ids_ms, ids = timed(fresh(lambda: chat_format.render(messages)), args.repeat)
    bounded = chat_template._time_limit
    chat_template._time_limit = lambda seconds: contextlib.nullcontext(lambda: None)  # type: ignore[assignment]
    unbounded_ms, _ = timed(fresh(lambda: chat_format.render(messages)), args.repeat)
    chat_template._time_limit = bounded
    full = len(ids)
    renders = 0
    original = chat_format._render_text_as_given

    def counting(*a, **k):
        nonlocal renders
        renders += 1
        return original(*a, **k)

    chat_format._render_text_as_given = counting  # type: ignore[method-assign]
    fit_ms, fitted = timed(fresh(lambda: chat_format.fit(messages, full // 4, 256)), args.repeat)
    renders //= args.repeat
    print(f"Qwen3's template, {len(messages) - 1} messages + a system prompt: {len(text):,} characters, {full:,} ids")
    print("  each: the median of the runs (the best)")
    print(f"  template text (prompt_text)      {text_ms}")
    print(f"  text to ids (render)             {ids_ms}   goal: <= 20 ms")
    print(f"  the same without the time limit  {unbounded_ms}")
    print(
        f"  fit to a quarter of it           {fit_ms}   {renders} renders, {fitted.dropped_messages} messages dropped"
    )
    print(f"  (limits: {chat_template.TEMPLATE_SECONDS:g} s a render; the load average now: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
