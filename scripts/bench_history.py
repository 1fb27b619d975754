"""How the history store scales: a generated history of 1,000 conversations x 100
messages plus one 1,000-message conversation (some replies with sampling-inspector
data), in a temporary folder, timed at the store and in the app.

    .venv/bin/python scripts/bench_history.py            # the full history (about 100k messages)
    .venv/bin/python scripts/bench_history.py --quick    # 50 conversations: a quick look

Goals (issue 15): opening stays fast, the database holds at most twice the bytes of
its text, and sending a message in the big conversation costs at most 20 ms more
than in a fresh history. Not a test: it prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatapp.history import MIGRATIONS, HistoryStore, Status  # noqa: E402

INSPECTED_REPLIES = 150  # replies given inspection data; the store keeps the newest 100
SEED = 15
SENDS = 5  # messages sent in each history; the median is reported


def corpus_text() -> str:
    """Real prose for the messages: the built-in Shakespeare corpus."""
    from model.training.corpus import builtin_works

    return "\n\n".join(work.text for work in builtin_works())


def excerpt(rng: random.Random, corpus: str, characters: int) -> str:
    start = corpus.find(" ", rng.randrange(len(corpus) - characters - 1)) + 1
    end = corpus.rfind(" ", start, start + characters)
    return corpus[start : end if end > start else start + characters].strip() or "Words, words, words."


def message_text(rng: random.Random, corpus: str, role: str) -> str:
    if role == "user":
        return excerpt(rng, corpus, int(rng.lognormvariate(4.6, 0.7)))  # about 100 characters, a few up to 1,000
    return excerpt(rng, corpus, int(rng.lognormvariate(6.4, 0.6)))  # about 600 characters, a few up to 4,000


def inspection_steps(rng: random.Random, tokens: int) -> list[dict]:
    steps = []
    for _ in range(tokens):
        ids = [int(rng.paretovariate(1.1)) % 32000 for _ in range(10)]
        probabilities = sorted((rng.random() ** 3 for _ in ids), reverse=True)
        total = sum(probabilities)
        drawn = rng.randrange(3)
        steps.append(
            {
                "token_id": ids[drawn],
                "text": f" w{ids[drawn]}",
                "rank": drawn,
                "candidates": [
                    {
                        "id": i,
                        "text": f" w{i}",
                        "raw_prob": p / total,
                        "final_prob": p / total * 1.5 if k < 5 else 0.0,
                        "drawn": k == drawn,
                        "cut_by": None if k < 5 else "top_k",
                    }
                    for k, (i, p) in enumerate(zip(ids, probabilities))
                ],
            }
        )
    return steps


def generate(
    path: Path, conversations: int, per_conversation: int, big: int, inspected: int = INSPECTED_REPLIES
) -> tuple[int, int]:
    """Fill the history in bulk, through the store's schema and triggers; returns (big conversation id, text bytes)."""
    rng = random.Random(SEED)
    corpus = corpus_text()
    store = HistoryStore(path)
    db = store._db  # one transaction for the whole history: generating must not take minutes
    db.execute("BEGIN")
    now = time.time() - 86400 * 365
    text_bytes = 0
    big_id = None
    for index in range(conversations + 1):
        count = big if index == conversations else per_conversation
        title = excerpt(rng, corpus, 40).replace("\n", " ")[:48]
        text_bytes += len(title.encode())
        conversation_id = db.execute(
            "INSERT INTO conversations (title, created_at, updated_at) VALUES (?, ?, ?)", (title, now, now)
        ).lastrowid
        rows = []
        for number in range(count):
            role = "user" if number % 2 == 0 else "assistant"
            content = message_text(rng, corpus, role)
            text_bytes += len(content.encode())
            now += 30
            rows.append(
                (
                    conversation_id,
                    role,
                    content,
                    Status.COMPLETE,
                    now,
                    "shakespeare-base" if role == "assistant" else None,
                )
            )
        first = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM messages").fetchone()[0]
        db.executemany(
            "INSERT INTO messages (conversation_id, role, content, status, created_at, model) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.execute(  # one branch: each message's parent is the one before it
            "UPDATE messages SET slot = id, parent_id = CASE WHEN id > ? THEN id - 1 END WHERE id >= ?", (first, first)
        )
        db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
        big_id = conversation_id
    db.execute("COMMIT")
    replies = [m for m in store.messages(big_id) if m.role == "assistant"][-inspected:] if inspected else []
    for reply in replies:  # through the public API: packed, and pruned to the newest 100
        store.finish_message(
            reply.id,
            reply.content,
            Status.COMPLETE,
            {"completion_tokens": len(reply.content) // 4},
            inspection=inspection_steps(rng, len(reply.content) // 4),
        )
    store.remember_open(big_id)
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return big_id, text_bytes


def v2_history_with_json_inspection(path: Path, turns: int) -> None:
    """The issue's case: a 200-turn conversation written by schema v2, about 1 KB of JSON per generated token."""
    import json

    rng = random.Random(SEED)
    corpus = corpus_text()
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + MIGRATIONS[1] + "; PRAGMA user_version = 2;")
    db.execute("INSERT INTO conversations (title, created_at, updated_at) VALUES ('Old', 0, 0)")
    for _ in range(turns):
        db.execute(
            "INSERT INTO messages (conversation_id, role, content, created_at) VALUES (1, 'user', ?, 0)",
            (message_text(rng, corpus, "user"),),
        )
        reply = message_text(rng, corpus, "assistant")
        steps = [
            {key: value for key, value in step.items() if key not in ("token_id", "rank")}
            for step in inspection_steps(rng, len(reply) // 4)
        ]
        db.execute(
            "INSERT INTO messages (conversation_id, role, content, created_at, inspection) "
            "VALUES (1, 'assistant', ?, 0, ?)",
            (reply, json.dumps(steps)),
        )
    db.commit()
    db.close()


def migration_rows(folder: Path) -> list[tuple[str, str]]:
    path = folder / "v2.sqlite3"
    v2_history_with_json_inspection(path, 200)
    before = path.stat().st_size
    started = time.perf_counter()
    store = HistoryStore(path)
    took = (time.perf_counter() - started) * 1000
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    after = path.stat().st_size
    count = store.message_count(1)
    messages = timed(lambda: store.messages(1))
    store.close()
    return [
        (
            "v2 history, 200 turns with JSON inspection: migrate at first open",
            f"{took:.0f} ms, {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB; "
            f"messages() of its {count}: {messages:.1f} ms",
        )
    ]


def timed(action, repeat: int = 5) -> float:
    """Median milliseconds of `repeat` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def one_turn(store: HistoryStore, conversation_id: int, steps: list[dict]) -> None:
    """What sending a message costs the store: the prompt, a streaming reply saved as it grows, its finish."""
    store.add_message(conversation_id, "user", "What is the question?")
    reply = store.add_message(conversation_id, "assistant", "", status=Status.STREAMING, model="bench")
    text = ""
    for _piece in range(5):
        text += " to be or not to be" * 10
        store.update_content(reply.id, text)
    store.finish_message(reply.id, text, Status.COMPLETE, {"completion_tokens": 50}, inspection=steps)


def store_rows(path: Path, fresh_path: Path, big_id: int, text_bytes: int) -> list[tuple[str, str]]:
    rows = [
        (
            "history",
            f"{path.stat().st_size / 1e6:.1f} MB, text {text_bytes / 1e6:.1f} MB: "
            f"{path.stat().st_size / text_bytes:.2f}x the text (goal <= 2x)",
        )
    ]
    rows.append(("HistoryStore(path) open", f"{timed(lambda: HistoryStore(path).close()):.1f} ms"))
    raw = sqlite3.connect(path)
    rows.append(
        (
            "  PRAGMA quick_check (not done at open)",
            f"{timed(lambda: raw.execute('PRAGMA quick_check').fetchall(), 1):.0f} ms",
        )
    )
    raw.close()
    store = HistoryStore(path)
    rows.append(
        ("conversations()", f"{timed(store.conversations):.1f} ms ({len(store.conversations())} conversations)")
    )
    rows.append(
        (
            "open big conversation: messages(limit=20) + message_count",
            f"{timed(lambda: (store.messages(big_id, limit=20), store.message_count(big_id))):.2f} ms",
        )
    )
    rows.append(("  messages() of all 1,000", f"{timed(lambda: store.messages(big_id)):.1f} ms"))
    inspected = store._db.execute("SELECT message_id FROM inspections ORDER BY seq DESC LIMIT 1").fetchone()[0]
    steps = store.inspection(inspected)
    rows.append(
        ("inspection(id) of a reply", f"{timed(lambda: store.inspection(inspected)):.1f} ms ({len(steps)} steps)")
    )
    packed = store._db.execute("SELECT SUM(length(data)), COUNT(*) FROM inspections").fetchone()
    rows.append(("inspection data kept", f"{packed[1]} replies, {packed[0] / 1e6:.2f} MB"))
    for label, query in (("common word", "love"), ("two prefixes", "noble sw"), ("rare word", "yorick")):
        hits = len(store.search(query))
        rows.append(
            (f"search({query!r}) {label}", f"{timed(lambda query=query: store.search(query)):.1f} ms ({hits} hits)")
        )
        rows.append(
            (
                f"conversations({query!r}) filter",
                f"{timed(lambda query=query: store.conversations(query)):.1f} ms",
            )
        )
    turn_steps = inspection_steps(random.Random(1), 50)
    big_turn = timed(lambda: one_turn(store, big_id, turn_steps), 10)
    fresh = HistoryStore(fresh_path)
    fresh_id = fresh.create_conversation().id
    fresh_turn = timed(lambda: one_turn(fresh, fresh_id, turn_steps), 10)
    rows.append(("one turn (add, 5 saves, finish with 50 steps): big DB", f"{big_turn:.1f} ms"))
    rows.append(("  the same in a fresh history", f"{fresh_turn:.1f} ms"))
    store.close()
    fresh.close()
    return rows


async def app_rows(path: Path, fresh_path: Path, big_id: int) -> list[tuple[str, str]]:
    """The app on the big history: first paint of the big conversation, and sending a message."""
    from chatapp.tui.app import ChatApp
    from chatapp.tui.screens.chat import PAGE_SIZE
    from tests.helpers.fake_backend import FakeBackend

    async def open_and_send(history: Path, expected_id: int | None) -> tuple[float, float]:
        started = time.perf_counter()
        app = ChatApp(
            engine=FakeBackend(replies=[["To be", ", or not", " to be."]] * SENDS), store=HistoryStore(history)
        )
        async with app.run_test(size=(120, 40)) as pilot:
            while app.chat.conversation is None or (expected_id and app.chat.conversation.id != expected_id):
                await pilot.pause(0.005)
            await pilot.pause()
            painted = (time.perf_counter() - started) * 1000
            sends = []
            for _ in range(SENDS):
                before = app.store.message_count(app.chat.conversation.id)
                started = time.perf_counter()
                app.chat.prompt.text = "What is the question?"
                await pilot.press("enter")
                while app.chat.job is not None or app.store.message_count(app.chat.conversation.id) < before + 2:
                    await pilot.pause(0.005)
                await pilot.pause()
                sends.append((time.perf_counter() - started) * 1000)
        return painted, statistics.median(sends)

    big_paint, big_send = await open_and_send(path, big_id)
    fresh_paint, fresh_send = await open_and_send(fresh_path, None)
    # The same screen on a small history: one conversation of PAGE_SIZE messages. What a send costs
    # more in the big history than here is what the history's size costs; the rest is drawing a
    # full screen instead of an empty one.
    small_path = fresh_path.with_name("small.sqlite3")
    small_id, _ = generate(small_path, 0, 0, PAGE_SIZE, inspected=0)
    _, small_send = await open_and_send(small_path, small_id)
    return [
        (
            "app start to first paint of the big conversation",
            f"{big_paint:.0f} ms (fresh history: {fresh_paint:.0f} ms)",
        ),
        (f"send a message, reply done (median of {SENDS}): big conversation", f"{big_send:.0f} ms"),
        (
            "  the same in a fresh history",
            f"{fresh_send:.0f} ms: {big_send - fresh_send:+.0f} ms in the big one (goal <= +20 ms)",
        ),
        (
            f"  the same in a history of one {PAGE_SIZE}-message conversation",
            f"{small_send:.0f} ms: {big_send - small_send:+.0f} ms in the big one (the same screen)",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 conversations instead of 1,000")
    parser.add_argument("--no-app", action="store_true", help="only the store timings")
    args = parser.parse_args()
    conversations = 50 if args.quick else 1000
    with tempfile.TemporaryDirectory(prefix="bench-history-") as folder:
        path, fresh_path = Path(folder) / "history.sqlite3", Path(folder) / "fresh.sqlite3"
        started = time.perf_counter()
        big_id, text_bytes = generate(path, conversations, 100, 1000)
        print(
            f"generated {conversations} conversations x 100 messages + one of 1,000 "
            f"in {time.perf_counter() - started:.0f} s\n"
        )
        rows = store_rows(path, fresh_path, big_id, text_bytes) + migration_rows(Path(folder))
        if not args.no_app:
            try:
                rows += asyncio.run(app_rows(path, Path(folder) / "fresh-app.sqlite3", big_id))
            except Exception as error:  # the chat screen is being rewritten: the store numbers still count
                rows.append(("app timings", f"not measured: {type(error).__name__}: {error}"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
