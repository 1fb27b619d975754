"""F4 → "Download a model…": the download screen, the download in the background and the model opened at the
end, against the stand-in hub on 127.0.0.1 (tests/helpers/fake_hub.py): no network."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from textual.widgets import Label, OptionList

from chatapp.models.listing import human_size
from chatapp.models.resolve import resolve_model
from chatapp.tui.screens import download as download_module
from chatapp.tui.screens.download import DownloadBar, DownloadScreen, eta_words, progress_words
from chatapp.tui.screens.models import ModelPickerScreen
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.fake_hub import FakeHub
from tests.helpers.foreign_gguf import write_foreign_gguf
from tests.helpers.paths import ROOT
from tests.helpers.tui_app import make_app, notices, reply_texts, send, wait_idle, wait_until

SHIPPED = ROOT / "chatapp" / "builtin" / "shakespeare-chat-q8_0.gguf"  # 6.6 MB: big enough to stop midway
REPO = "someone/Tiny-Chat-GGUF"
SPEC = f"{REPO}:Q8_0"
SIZE = (110, 36)


@pytest.fixture
def hub(hub_cache, monkeypatch, tmp_path):
    small = write_foreign_gguf(tmp_path / "small.gguf", "qwen2", seed=3)
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        fake.add_repo(REPO, {"Tiny-Chat-Q8_0.gguf": SHIPPED, "Tiny-Chat-Q4_K_M.gguf": small})
        yield fake


class Opener:
    """The app's model opener: resolves the spec as the real one does, then opens a fake engine."""

    def __init__(self):
        self.opened: list[tuple[str, Path]] = []

    def __call__(self, spec: str, backend: str, device: str):
        self.opened.append((spec, resolve_model(spec).path))
        return FakeBackend(model_name="downloaded", replies=[["Hello from the download"]])


def download_app(opener: Opener | None = None):
    return make_app(FakeBackend(replies=[["A reply while it downloads"]] * 3), opener=opener or Opener())


async def open_download_screen(pilot) -> DownloadScreen:
    app = pilot.app
    await wait_until(pilot, lambda: app.chat.is_mounted, what="the chat screen")
    await pilot.press("f4")
    await wait_until(pilot, lambda: isinstance(app.screen, ModelPickerScreen), what="the model picker")
    options = app.screen.query_one("#models", OptionList)
    options.highlighted = options.option_count - 1
    assert "Download a model" in str(options.get_option_at_index(options.option_count - 1).prompt)
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(app.screen, DownloadScreen), what="the download screen")
    return app.screen


async def list_repo(pilot, screen: DownloadScreen, text: str) -> None:
    box = screen.query_one("#repo")
    box.focus()
    box.value = text
    await pilot.press("enter")


def status_text(screen: DownloadScreen) -> str:
    return str(screen.query_one("#download-status", Label).render())


async def pick_quant(pilot, screen: DownloadScreen, quant: str) -> None:
    await wait_until(pilot, lambda: screen.plan is not None, what="the repo's files")
    plan = screen.plan
    assert plan is not None
    quants = screen.query_one("#quants", OptionList)
    quants.highlighted = [c.quant for c in plan.candidates].index(quant)
    quants.focus()
    await pilot.press("enter")


def test_progress_words():
    data = {"done_bytes": 120_000_000, "total_bytes": 400_000_000, "bytes_per_second": 12_300_000, "eta_seconds": 23}
    assert progress_words(data) == "120 MB of 400 MB · 12 MB/s · 23 s left"
    assert progress_words({**data, "bytes_per_second": 0, "eta_seconds": None}) == "120 MB of 400 MB · measuring speed"
    assert eta_words(125) == "2 min 05 s left" and eta_words(7300) == "2 h 01 min left"


@pytest.mark.asyncio
async def test_the_suggested_models_are_listed_with_this_machines_memory(monkeypatch):
    monkeypatch.setattr(download_module, "machine_memory", lambda: 2_000_000_000)
    app = download_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_download_screen(pilot)
        assert "This machine has 2.0 GB of memory" in str(screen.query_one("#machine-memory", Label).render())
        suggested = screen.query_one("#suggested", OptionList)
        rows = {str(suggested.get_option_at_index(i).prompt): i for i in range(suggested.option_count)}
        text = "\n".join(rows)
        for name in ("Gemma 3 270M", "Qwen3 0.6B", "Gemma 3 1B", "Llama 3.2 1B", "Qwen3 1.7B", "SmolLM3 3B"):
            assert name in text
        assert "Qwen3 0.6B Q8_0 · 639 MB · needs about 1.2 GB" in " ".join(text.split())
        # what needs more memory than the machine has is shown, and cannot be picked
        [too_big] = [i for row, i in rows.items() if "SmolLM3" in row]
        assert "more memory than this machine has" in str(suggested.get_option_at_index(too_big).prompt)
        assert suggested.get_option_at_index(too_big).disabled
        assert not suggested.get_option_at_index(rows[next(r for r in rows if "Qwen3 0.6B" in r)]).disabled
        # picking one starts its download (here: no hub answers, so it ends in one line)
        started: list[str] = []
        monkeypatch.setattr(type(app), "start_download", lambda self, spec: started.append(spec))
        suggested.highlighted = 1
        suggested.focus()
        await pilot.pause()
        assert "Qwen3 0.6B: Qwen/Qwen3-0.6B-GGUF:Q8_0 on the Hugging Face hub" in status_text(screen)
        await pilot.press("enter")
        await wait_until(pilot, lambda: started == ["Qwen/Qwen3-0.6B-GGUF:Q8_0"], what="the download to start")
        assert app.screen is app.chat


@pytest.mark.asyncio
async def test_a_repo_is_listed_downloaded_in_the_background_and_opened(hub, hub_cache, monkeypatch):
    seen: list[str] = []

    def progress_seen(data: dict) -> str:
        seen.append(words := progress_words(data))
        return words

    monkeypatch.setattr(download_module, "progress_words", progress_seen)
    halfway, go_on = threading.Event(), threading.Event()
    real_pull = download_module.pull

    def pull_that_waits_halfway(spec, on_event=None, cancel=None):
        def on_progress(event):
            on_event(event)
            if event.kind == "progress" and event.data["done_bytes"] >= SHIPPED.stat().st_size // 2:
                if not halfway.is_set():
                    halfway.set()
                    go_on.wait(20)

        return real_pull(spec, on_event=on_progress, cancel=cancel)

    monkeypatch.setattr(download_module, "pull", pull_that_waits_halfway)
    opener = Opener()
    app = download_app(opener)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_download_screen(pilot)
        await list_repo(pilot, screen, REPO)
        await wait_until(pilot, lambda: screen.plan is not None, what="the repo's files")
        quants = screen.query_one("#quants", OptionList)
        listed = [str(quants.get_option_at_index(i).prompt) for i in range(quants.option_count)]
        assert any(f"Q8_0 ({human_size(SHIPPED.stat().st_size)})" in row for row in listed)
        assert any(row.startswith("Q4_K_M") and "the default" in row for row in listed)
        assert "2 model files" in status_text(screen)
        await pick_quant(pilot, screen, "Q8_0")
        await wait_until(pilot, halfway.is_set, what="the download to be halfway")
        assert app.screen is app.chat and app.download is not None
        await wait_until(pilot, lambda: any(" of 6.6 MB" in s for s in seen), what="progress shown")
        bar = app.query_one(DownloadBar)
        assert f"Downloading {REPO}" in str(bar.query_one("#download-what", Label).render())
        # the chat goes on meanwhile
        await send(pilot, "Still there?")
        await wait_idle(pilot)
        assert reply_texts(app)[-1] == "A reply while it downloads"
        go_on.set()
        await wait_until(pilot, lambda: app.download is None, what="the download to end")
        await wait_until(pilot, lambda: app.engine is not None and app.loaded_spec == SPEC, what="the model")
        await wait_until(pilot, lambda: not app.query(DownloadBar), what="the bar to go")
        [(spec, path)] = opener.opened
        assert spec == SPEC and path.read_bytes() == SHIPPED.read_bytes()
        assert app.chat.current.settings["model"] == SPEC  # the conversation chats with it from now on
        await wait_until(pilot, lambda: any("is downloaded and checked; opening it" in n for n in notices(app)))
        assert seen[-1].startswith("6.6 MB of 6.6 MB")


@pytest.mark.asyncio
async def test_a_cancelled_download_keeps_what_arrived_and_the_next_try_resumes(hub, hub_cache, monkeypatch):
    size = SHIPPED.stat().st_size
    third, go_on = threading.Event(), threading.Event()
    real_pull = download_module.pull

    def pull_that_waits(spec, on_event=None, cancel=None):
        def on_progress(event):
            on_event(event)
            if event.kind == "progress" and event.data["done_bytes"] >= size // 3 and not third.is_set():
                third.set()
                go_on.wait(20)

        return real_pull(spec, on_event=on_progress, cancel=cancel)

    monkeypatch.setattr(download_module, "pull", pull_that_waits)
    opener = Opener()
    app = download_app(opener)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_download_screen(pilot)
        await list_repo(pilot, screen, SPEC)
        await pick_quant(pilot, screen, "Q8_0")
        await wait_until(pilot, third.is_set, what="a third of the download")
        await wait_until(pilot, lambda: app.query("#download-cancel"), what="the bar")
        await pilot.click("#download-cancel")
        await wait_until(pilot, lambda: app.download is None or app.download.cancelled, what="the cancel")
        go_on.set()
        await wait_until(pilot, lambda: app.download is None, what="the download to stop")
        await wait_until(pilot, lambda: any("cancelled" in n for n in notices(app)), what="the notice")
        [notice] = [n for n in notices(app) if "cancelled" in n]
        assert f"Download of {SPEC} cancelled" in notice and "kept" in notice and "\n" not in notice
        [kept] = list(hub_cache.rglob("*.incomplete"))
        have = kept.stat().st_size
        assert size // 3 - 256 * 1024 <= have < size
        assert opener.opened == [] and app.loaded_spec != SPEC
        # the second try, from the picker's list again, asks only for the rest
        hub.reset_counts()
        third.set()  # no waiting this time
        screen = await open_download_screen(pilot)
        await list_repo(pilot, screen, REPO)
        await pick_quant(pilot, screen, "Q8_0")
        await wait_until(pilot, lambda: app.engine is not None and app.loaded_spec == SPEC, what="the model")
        assert [r.headers.get("range") for r in hub.downloads("Tiny-Chat-Q8_0.gguf")] == [f"bytes={have}-"]
        assert hub.bytes_sent() == size - have
        assert opener.opened[0][1].read_bytes() == SHIPPED.read_bytes()
        assert list(hub_cache.rglob("*.incomplete")) == []


@pytest.mark.asyncio
async def test_the_picker_offers_to_cancel_a_download_that_runs(hub, hub_cache, monkeypatch):
    started, go_on = threading.Event(), threading.Event()
    real_pull = download_module.pull

    def pull_that_waits(spec, on_event=None, cancel=None):
        def on_progress(event):
            on_event(event)
            if event.kind == "progress" and not started.is_set():
                started.set()
                go_on.wait(20)

        return real_pull(spec, on_event=on_progress, cancel=cancel)

    monkeypatch.setattr(download_module, "pull", pull_that_waits)
    app = download_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.chat.is_mounted, what="the chat screen")
        app.start_download(SPEC)
        await wait_until(pilot, started.is_set, what="the download to start")
        app.start_download(SPEC)  # a second one at once is refused, in one line
        await wait_until(pilot, lambda: any("is downloading: cancel it first" in n for n in notices(app)))
        await pilot.press("f4")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPickerScreen), what="the model picker")
        options = app.screen.query_one("#models", OptionList)
        last = options.get_option_at_index(options.option_count - 1)
        assert str(last.prompt) == f"Cancel the download of {SPEC}"
        options.highlighted = options.option_count - 1
        await pilot.press("enter")
        go_on.set()
        await wait_until(pilot, lambda: app.download is None, what="the download to stop")
        await wait_until(pilot, lambda: any("cancelled" in n for n in notices(app)), what="the notice")
        assert app.screen is app.chat


@pytest.mark.asyncio
async def test_a_repo_that_is_not_there_is_one_line_on_the_screen_and_in_the_app(hub, hub_cache):
    app = download_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_download_screen(pilot)
        await list_repo(pilot, screen, "someone/Missing-GGUF")
        await wait_until(pilot, lambda: "Missing-GGUF" in status_text(screen) and "Asking" not in status_text(screen))
        text = status_text(screen)
        assert "\n" not in text and "Traceback" not in text
        assert screen.query_one("#download-status", Label).has_class("field-error")
        assert not screen.query_one("#quants", OptionList).display
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.chat, what="the chat")
        # the same, started in the background (as a suggested model whose repo went away would be)
        app.start_download("someone/Missing-GGUF:Q4_K_M")
        await wait_until(pilot, lambda: app.download is None, what="the download to fail")
        await wait_until(pilot, lambda: any("Could not download" in n for n in notices(app)), what="the notice")
        [notice] = [n for n in notices(app) if "Could not download" in n]
        assert "someone/Missing-GGUF" in notice and "\n" not in notice
        await wait_until(pilot, lambda: not app.query(DownloadBar), what="the bar to go")
        assert app.engine is not None  # the model in use stays


@pytest.mark.asyncio
async def test_the_welcome_says_how_to_get_a_real_model_on_the_built_in_one_only():
    app = make_app(FakeBackend(model_name="shakespeare-chat"))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.chat.is_mounted and app.chat.query("#welcome"), what="the welcome")
        assert app.loaded_spec == ""
        assert "F4 → Download a model…, or `chatapp pull`".lower() in str(app.query_one("#welcome").render()).lower()
    app = make_app(FakeBackend(), settings=None)
    app.default_spec = "someone/Tiny-Chat-GGUF:Q8_0"
    app.loaded_spec = app.default_spec
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.chat.is_mounted and app.chat.query("#welcome"), what="the welcome")
        assert "Download a model" not in str(app.query_one("#welcome").render())
