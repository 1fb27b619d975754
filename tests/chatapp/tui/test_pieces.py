"""Pilot and unit tests of the app's pieces on their own: keys, help, input, context bar, inspector, model
picker, clipboard and the welcome text. Each is mounted in a small host app with the app's stylesheet, so
that these tests do not depend on the chat screen."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from textual.app import App
from textual.geometry import Region
from textual.widgets import DataTable, Label, Markdown, OptionList, TextArea

import chatapp.tui
from chatapp.models.registry import ModelRef
from chatapp.paths import data_dir
from chatapp.tui import clipboard
from chatapp.tui.clipboard import copy_text
from chatapp.tui.keys import APP_KEYS, NEWLINE_KEY, PROMPT_KEYS, app_bindings
from chatapp.tui.screens.help import HelpScreen
from chatapp.tui.screens.inspector import InspectorScreen
from chatapp.tui.screens.models import ModelPickerScreen
from chatapp.tui.widgets.context_bar import ContextBar, ContextUse, context_line
from chatapp.tui.widgets.prompt import PromptInput
from chatapp.tui.widgets.welcome import Welcome
from model.inference.sampling import SamplingParams, inspection_step

STYLESHEET = Path(chatapp.tui.__file__).parent / "chatapp.tcss"


class Host(App):
    CSS_PATH = STYLESHEET

    def __init__(self, *widgets):
        super().__init__()
        self.widgets = widgets

    def compose(self):
        yield from self.widgets


def rendered_lines(widget) -> list[str]:
    lines = widget.render_lines(Region(0, 0, *widget.outer_size))  # with its padding and border
    return [line.text.rstrip() for line in lines]


def shown_text(container) -> str:
    """What a container's leaf widgets show, each as rendered at its size (cut text stays cut)."""
    leaves = [w for w in container.query("*") if not w.children and w.display and w.outer_size.area]
    return "\n".join(line for leaf in leaves for line in rendered_lines(leaf))


# --- keys ---


def test_every_key_is_bound_once_and_none_is_a_text_areas_own():
    keys = [key for key, _, _, _ in APP_KEYS]
    assert len(keys) == len(set(keys))
    actions = {action for _, action, _, _ in APP_KEYS}
    assert {
        "next_conversation",
        "previous_conversation",
        "previous_branch",
        "next_branch",
        "search",
        "stop_or_quit",
    } <= actions
    text_area_keys = {key for binding in TextArea.BINDINGS for key in binding.key.split(",")}
    assert not (set(keys) - {"ctrl+c"}) & text_area_keys  # ctrl+c is taken over on purpose (a priority binding)
    assert NEWLINE_KEY not in keys and NEWLINE_KEY not in text_area_keys


def test_ctrl_c_wins_over_the_focused_widget_and_textuals_quit_hint():
    [binding] = [b for b in app_bindings() if b.key == "ctrl+c"]
    assert binding.action == "stop_or_quit" and binding.priority
    assert not any(b.priority for b in app_bindings() if b.key != "ctrl+c")


@pytest.mark.asyncio
async def test_ctrl_c_reaches_the_screens_action_with_a_text_area_focused():
    from textual.screen import Screen

    class KeyedScreen(Screen):
        BINDINGS = app_bindings()

        def __init__(self):
            super().__init__()
            self.stopped = 0

        def compose(self):
            yield PromptInput(id="prompt")

        def action_stop_or_quit(self):
            self.stopped += 1

    screen = KeyedScreen()
    app = Host()
    async with app.run_test() as pilot:
        await app.push_screen(screen)
        screen.query_one(PromptInput).focus()
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert screen.stopped == 1
        assert not app._notifications  # no "press ctrl+q to quit" hint


# --- help ---


@pytest.mark.asyncio
async def test_the_help_shows_every_key_at_80_by_40_without_scrolling():
    app = Host()
    async with app.run_test(size=(80, 40)) as pilot:
        app.push_screen(HelpScreen())
        await pilot.pause()
        await pilot.pause()
        dialog = app.screen.query_one("#help")
        assert dialog.max_scroll_y == 0 and dialog.max_scroll_x == 0
        assert dialog.region in app.screen.region
        text = shown_text(app.screen.query_one(Markdown))
        markdown = app.screen.query_one(Markdown).source
        for key, _, description, _ in APP_KEYS:
            assert key in text and f"`{key}`" in markdown and description in markdown
        for key, description in PROMPT_KEYS:
            assert key in text and description in markdown
        assert "Shift+Enter" in text and NEWLINE_KEY in text


# --- the input ---


@pytest.mark.asyncio
async def test_the_input_says_which_key_adds_a_line_and_that_key_does():
    prompt = PromptInput(id="prompt")
    app = Host(prompt)
    async with app.run_test(size=(80, 24)) as pilot:
        prompt.focus()
        assert "Shift+Enter" in str(prompt.placeholder) and NEWLINE_KEY.title() in str(prompt.placeholder)
        await pilot.press("a", NEWLINE_KEY, "b")
        assert prompt.text == "a\nb"


# --- context bar ---


def test_the_context_line_keeps_every_number_and_shortens_the_model_name():
    use = ContextUse(1_234, 256, 2_048, 3, "a-very-long-model-name-that-never-ends-q4_K_M.gguf", 131_072)
    for width in (52, 78, 80, 120):
        plain = context_line(use, width).plain
        assert len(plain) <= width
        assert "1,234" in plain and "256" in plain and "2,048" in plain and "3 " in plain, plain
        assert "73%" in plain
    assert "a-very-long-model-name-that-never-ends-q4_K_M.gguf" in context_line(use, 200).plain
    # the chat's bar is 52 wide in an 80-column terminal with the sidebar: it still says what it is
    assert context_line(ContextUse(37, 256, 512, 0, "fake-model"), 52).plain.startswith("context ")
    assert "3 dropped" in context_line(use, 40).plain  # narrower: the bar stays, the name goes
    assert "…" in context_line(use, 80).plain


def test_the_bar_has_a_prompt_part_and_a_reply_part():
    plain = context_line(ContextUse(128, 256, 512, 0, "m"), 120).plain
    assert "███▒▒▒▒▒▒░░░" in plain  # a quarter prompt, half the reply's reserve, a quarter free
    assert "128 prompt + 256 reply/512 tokens (75%)" in plain
    full = context_line(ContextUse(300, 212, 512, 4, "m"), 200).plain
    assert "░" not in full and "the 4 earliest messages no longer fit" in full


@pytest.mark.asyncio
async def test_the_context_bar_is_one_line_at_80_columns():
    bar = ContextBar("", id="context")
    app = Host(bar)
    async with app.run_test(size=(80, 10)) as pilot:
        bar.show(1_234, 256, 2_048, 3, "llama3.2:3b-instruct-q4_K_M-with-a-long-tail", 131_072)
        await pilot.pause()
        assert bar.size.height == 1 and bar.has_class("overflowing")
        [line] = rendered_lines(bar)
        assert "1,234" in line and "2,048" in line and "3 dropped" in line
        bar.show(10, 20, 512, 0, "m")
        await pilot.pause()
        assert not bar.has_class("overflowing")
        bar.show_text("loading model…")
        await pilot.pause()
        assert rendered_lines(bar)[0].strip() == "loading model…"


# --- inspector ---


def real_steps() -> list[dict]:
    logits = [3.0, 2.5, 2.0, 1.0, 0.5, -1.0, -2.0, -3.0]
    texts = lambda i: f"t{i}"  # noqa: E731
    params = SamplingParams(temperature=1.0, top_k=3, top_p=1.0)
    return [inspection_step(logits, params, [], 0, texts), inspection_step(logits, params, [], 2, texts)]


@pytest.mark.asyncio
async def test_the_inspector_shows_the_rank_and_which_filter_cut_each_candidate():
    app = Host()
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(InspectorScreen(real_steps(), "top-k 3"))
        await pilot.pause()
        screen = app.screen
        table = screen.query_one(DataTable)
        verdicts = [str(table.get_row_at(i)[-1]) for i in range(table.row_count)]
        assert verdicts == ["drawn", "kept", "kept"] + ["cut by top-k"] * 5
        assert "the likeliest token" in str(screen.query_one("#step-summary", Label).render())
        options = screen.query_one("#tokens", OptionList)
        assert str(options.get_option_at_index(1).prompt).endswith("#3")
        await pilot.press("down")
        await pilot.pause()
        assert "the 3rd likeliest token" in str(screen.query_one("#step-summary", Label).render())


@pytest.mark.asyncio
async def test_the_inspector_shows_steps_stored_before_ranks_and_cut_by():
    old = [
        {
            "text": "To",
            "candidates": [
                {"text": "To", "raw_prob": 0.6, "final_prob": 1.0, "drawn": True},
                {"text": "Be", "raw_prob": 0.3, "final_prob": 0.0},
            ],
        },
        {
            "token_id": -1,
            "text": "be",
            "rank": -1,
            "candidates": [{"id": -1, "text": "be", "raw_prob": 0.5, "final_prob": 1.0, "drawn": True, "cut_by": None}],
        },
    ]
    app = Host()
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(InspectorScreen(old, ""))
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        assert [str(table.get_row_at(i)[-1]) for i in range(table.row_count)] == ["drawn", "cut"]
        assert str(app.screen.query_one("#step-summary", Label).render()) == "drawn: 'To'"
        await pilot.press("down")
        await pilot.pause()
        assert str(app.screen.query_one("#step-summary", Label).render()) == "drawn: 'be'"


# --- model picker ---


def models(tmp_path) -> list[ModelRef]:
    return [
        ModelRef("alpha", tmp_path / "alpha", "folder", "user"),
        ModelRef("beta", tmp_path / "beta.gguf", "gguf", "added"),
        ModelRef("gamma", tmp_path / "gamma.gguf", "gguf", "LM Studio"),
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize("current,index", [("beta-path", 1), ("alpha", 0), ("gamma-path", 2)])
async def test_the_model_picker_opens_on_the_model_in_use(tmp_path, current, index):
    refs = models(tmp_path)
    spec = str(refs[index].path) if current.endswith("-path") else current
    app = Host()
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(ModelPickerScreen(refs, spec))
        await pilot.pause()
        options = app.screen.query_one("#models", OptionList)
        assert options.highlighted == index and app.focused is options
        title = str(app.screen.query_one(".title", Label).render())
        assert title == f"Models · now: {refs[index].name}"


@pytest.mark.asyncio
async def test_the_model_picker_names_the_default_model(tmp_path):
    from chatapp.models.registry import default_model

    builtin = default_model()
    refs = models(tmp_path) + [builtin]
    app = Host()
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(ModelPickerScreen(refs, ""))
        await pilot.pause()
        assert app.screen.query_one("#models", OptionList).highlighted == 3
        assert str(app.screen.query_one(".title", Label).render()) == f"Models · now: {builtin.name}"


# --- clipboard ---


class FakeApp:
    def __init__(self):
        self.clipboard = None

    def copy_to_clipboard(self, text: str) -> None:
        self.clipboard = text


def test_a_clipboard_tool_gets_the_text(tmp_path, monkeypatch):
    tools = tmp_path / "bin"
    tools.mkdir()
    received = tmp_path / "received.txt"
    script = tools / "xclip"
    script.write_text(f'#!/bin/sh\necho "$@" > {received}.args\n/bin/cat > {received}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    app = FakeApp()
    notice = copy_text(app, "To be, or not — to be")
    assert notice == "Copied to the clipboard (xclip)"
    assert received.read_text(encoding="utf-8") == "To be, or not — to be"
    assert Path(f"{received}.args").read_text().split() == ["-selection", "clipboard"]
    assert app.clipboard == "To be, or not — to be"  # the app's own paste has it too
    assert not (data_dir() / "clipboard.txt").exists()


def test_a_tool_that_fails_or_hangs_is_passed_over(tmp_path, monkeypatch):
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "wl-copy").write_text("#!/bin/sh\nexit 1\n")
    (tools / "xsel").write_text("#!/bin/sh\nexec /bin/sleep 30\n")
    for tool in tools.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    monkeypatch.setattr(clipboard, "TOOL_TIMEOUT_S", 0.5)
    assert copy_text(FakeApp(), "x").startswith("Sent to the terminal (OSC 52")


def test_without_a_tool_the_text_goes_to_the_terminal_and_a_private_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    app = FakeApp()
    notice = copy_text(app, "Exeunt.")
    path = data_dir() / "clipboard.txt"
    assert app.clipboard == "Exeunt."
    assert notice == f"Sent to the terminal (OSC 52; tmux drops it unless set-clipboard is on) and saved to {path}"
    assert path.read_text(encoding="utf-8") == "Exeunt." and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    copy_text(app, "Again.")
    assert path.read_text(encoding="utf-8") == "Again."


def test_a_tool_that_needs_a_display_is_not_tried_without_one(tmp_path, monkeypatch):
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "xclip").write_text(f"#!/bin/sh\n/usr/bin/touch {tmp_path}/ran\n")
    (tools / "xclip").chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert copy_text(FakeApp(), "x").startswith("Sent to the terminal")
    assert not (tmp_path / "ran").exists()


# --- welcome ---


@pytest.mark.asyncio
async def test_the_welcome_is_short_at_80_columns():
    welcome = Welcome(id="welcome")
    app = Host(welcome)
    async with app.run_test(size=(80, 30)) as pilot:
        welcome.show(
            "shakespeare-chat",
            "A 5.85M-parameter GPT trained here on Shakespeare's plays, then taught to "
            "chat with LoRA; expect verse, not sense. " * 3,
        )
        await pilot.pause()
        lines = rendered_lines(welcome)
        assert len(lines) <= 10
        text = "\n".join(lines)
        assert "shakespeare-chat" in text and "A 5.85M-parameter GPT" in text
        for key in ("f1", "f2", "f4", NEWLINE_KEY):
            assert key in text


@pytest.mark.parametrize("current", ["", "endpoint:http://127.0.0.1:9/v1#remote-model"])
def test_the_picker_finds_the_current_model_among_servers_models_too(current):
    from chatapp.models.registry import list_models
    from chatapp.serving.endpoint import EndpointModel
    from chatapp.tui.screens.models import current_index

    local = list_models()
    models = [EndpointModel("remote-model", "http://127.0.0.1:9/v1")] + local
    index = current_index(models, current)
    if current:
        assert index == 0
    else:
        assert index is not None and models[index].name == "shakespeare-chat"
