"""What must not take the app down, nor lose what the user typed: a history or settings write that fails in
a handler, an engine that refuses the conversation, a full disk when a reply starts, the model picker with a
server listed, Ctrl+C pressed right after Enter or right after a reply ended, a server that comes back, and
two windows on one history."""

from __future__ import annotations

import pytest
from textual import events
from textual.widgets import OptionList

from chatapp.history import HistoryFull, HistoryStore, Status
from chatapp.serving.endpoint import EndpointError, EndpointModel, endpoint_spec
from chatapp.settings import SettingsError
from chatapp.tui.claims import ConversationClaims
from chatapp.tui.screens.dialogs import ConfirmScreen, TextPromptScreen
from chatapp.tui.screens.models import ModelPickerScreen
from chatapp.tui.widgets.messages import AssistantMessage, UserMessage
from model.inference.backend import EngineCrashed
from model.text.chat_template import TemplateError
from tests.helpers.fake_backend import FakeBackend
from tests.helpers.tui_app import make_app, notices, reply_texts, send, wait_idle, wait_until

pytestmark = pytest.mark.asyncio

SERVER = "http://127.0.0.1:8765/v1"


def full_disk(*args, **kwargs):
    raise HistoryFull("the disk is full (/nowhere): free some space and it is saved again", "/nowhere/h.sqlite3")


def stored(app) -> list[tuple[str, str, str]]:
    return [(m.role, m.content, m.status) for m in app.store.messages(app.chat.conversation.id)]


async def still_chats(pilot, reply: str) -> None:
    """The chat screen still answers keys: a message sent now gets its reply."""
    await send(pilot, "are you still there?")
    await wait_idle(pilot)
    assert reply_texts(pilot.app)[-1] == reply


# --- a failed history or settings write in a handler: a notice, and the app goes on ---


async def test_a_history_write_that_fails_in_a_dialogs_callback_is_a_notice_and_keys_still_work(monkeypatch):
    app = make_app(FakeBackend(replies=[["still here"]]))
    async with app.run_test() as pilot:
        await pilot.pause()
        monkeypatch.setattr(app.store, "rename", full_disk)
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: isinstance(app.screen, TextPromptScreen), what="the rename prompt")
        await pilot.press(*"new title", "enter")
        await wait_until(pilot, lambda: any("disk is full" in n for n in notices(app)), what="the notice")
        assert app.screen is app.chat
        await still_chats(pilot, "still here")


@pytest.mark.parametrize("keys", [["ctrl+n"], ["f8", "y"]], ids=["action", "confirmed-dialog"])
async def test_a_history_write_that_fails_in_an_action_is_a_notice_and_keys_still_work(monkeypatch, keys):
    app = make_app(FakeBackend(replies=[["first"], ["still here"]]))
    async with app.run_test() as pilot:
        await send(pilot, "hello")  # a conversation with a message: Ctrl+N makes a new one
        await wait_idle(pilot)
        monkeypatch.setattr(app.store, "create_conversation", full_disk)
        monkeypatch.setattr(app.store, "delete", full_disk)
        for key in keys:
            await pilot.press(key)
            await pilot.pause()
        await wait_until(pilot, lambda: any("disk is full" in n for n in notices(app)), what="the notice")
        assert not isinstance(app.screen, ConfirmScreen)
        await still_chats(pilot, "still here")


async def test_a_settings_file_that_cannot_be_written_is_a_notice(monkeypatch):
    def unwritable(*args, **kwargs):
        raise SettingsError("settings.toml was not changed: it is read-only")

    monkeypatch.setattr("chatapp.tui.app.save_value", unwritable)
    app = make_app(FakeBackend(replies=[["still here"]]))
    async with app.run_test() as pilot:
        await pilot.pause()
        app.theme = "textual-light" if app.theme != "textual-light" else "textual-dark"
        await wait_until(pilot, lambda: any("read-only" in n for n in notices(app)), what="the notice")
        await still_chats(pilot, "still here")


# --- the engine refuses the conversation ---


class RefusingBackend(FakeBackend):
    """An engine whose fit() refuses (a prompt that cannot be fitted, a template that does not compile)."""

    def __init__(self, error: Exception, **kwargs):
        super().__init__(**kwargs)
        self.error: Exception | None = error

    def fit(self, messages, reserve, continue_last=False, params=None):
        if self.error is not None:
            raise self.error
        return super().fit(messages, reserve, continue_last, params)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("the prompt does not fit the context of 16 tokens with 8 kept for the reply"),
        TemplateError("the chat template does not compile: unexpected '}'"),
    ],
    ids=["too-long", "template"],
)
async def test_an_engine_that_refuses_the_prompt_fails_the_reply_in_one_line(error):
    engine = RefusingBackend(error, replies=[["after"]], context_length=16)
    app = make_app(engine)
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await wait_until(pilot, lambda: any("The reply failed" in n for n in notices(app)), what="the notice")
        assert app.is_running and app.chat.job is None
        [failed] = [n for n in notices(app) if "The reply failed" in n]
        assert str(error) in failed and "\n" not in failed
        user, reply = app.store.messages(app.chat.conversation.id)
        assert (user.content, reply.role, reply.status) == ("hi", "assistant", Status.ERROR)  # finished, not streaming
        assert str(error) in reply.error
        assert "error" in app.query_one(AssistantMessage).footer_text()
        engine.error = None
        await still_chats(pilot, "after")
        # the failed reply is not sent to the engine
        assert [m.content for m in engine.calls[-1]["messages"]] == ["hi", "are you still there?"]


class FailingChat(FakeBackend):
    """An engine whose chat() raises in the reply's thread, before any piece."""

    def __init__(self, error: Exception, **kwargs):
        super().__init__(**kwargs)
        self.error: Exception | None = error

    def chat(self, *args, **kwargs):
        if self.error is not None:
            raise self.error
        return super().chat(*args, **kwargs)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a prompt of 40 tokens does not fit the context of 16"),
        TemplateError("the template refused the conversation: roles must alternate"),
        EngineCrashed("the llama.cpp worker died (signal 6)"),
        RuntimeError("CUDA out of memory\nTried to allocate 2.00 GiB"),
    ],
    ids=["value", "template", "crashed", "runtime"],
)
async def test_an_engine_error_in_the_reply_thread_fails_the_reply_in_one_line(error):
    engine = FailingChat(error, replies=[["after"]])
    app = make_app(engine)
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await wait_idle(pilot)
        assert stored(app)[-1][2] == Status.ERROR
        [failed] = [n for n in notices(app) if "The reply failed" in n]
        assert "\n" not in failed and str(error).splitlines()[0] in failed
        engine.error = None
        await still_chats(pilot, "after")


# --- a full disk when the reply starts ---


async def test_a_full_disk_when_the_reply_starts_keeps_the_message_and_the_app(monkeypatch):
    app = make_app(FakeBackend(replies=[["later"], ["still here"]]))
    async with app.run_test() as pilot:
        await pilot.pause()
        store = app.store
        add_message = store.add_message

        def no_room_for_replies(conversation_id, role, content, **kwargs):
            if role == "assistant":
                full_disk()
            return add_message(conversation_id, role, content, **kwargs)

        monkeypatch.setattr(store, "add_message", no_room_for_replies)
        await send(pilot, "keep me")
        await wait_until(pilot, lambda: any("disk is full" in n for n in notices(app)), what="the notice")
        [notice] = [n for n in notices(app) if "disk is full" in n]
        assert "\n" not in notice and "saved" in notice
        assert stored(app) == [("user", "keep me", "complete")]  # nothing typed is lost
        assert [w.content for w in app.query(UserMessage)] == ["keep me"]
        assert app.chat.job is None
        monkeypatch.setattr(store, "add_message", add_message)  # the disk has room again
        await pilot.press("ctrl+r")  # asks for the reply
        await wait_idle(pilot)
        assert stored(app) == [("user", "keep me", "complete"), ("assistant", "later", "complete")]
        await still_chats(pilot, "still here")


async def test_a_full_disk_when_the_message_is_sent_keeps_it_in_the_input(monkeypatch):
    app = make_app(FakeBackend(replies=[["still here"]]))
    async with app.run_test() as pilot:
        await pilot.pause()
        add_message = app.store.add_message
        monkeypatch.setattr(app.store, "add_message", full_disk)
        await send(pilot, "keep me")
        await wait_until(pilot, lambda: any("Not sent" in n for n in notices(app)), what="the notice")
        assert app.chat.prompt.text == "keep me" and stored(app) == []
        monkeypatch.setattr(app.store, "add_message", add_message)
        await still_chats(pilot, "still here")


async def test_a_full_disk_when_regenerating_keeps_the_reply_there_was(monkeypatch):
    app = make_app(FakeBackend(replies=[["first"], ["still here"]]))
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await wait_idle(pilot)
        monkeypatch.setattr(app.store, "add_message", full_disk)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: any("No new version" in n for n in notices(app)), what="the notice")
        assert reply_texts(app) == ["first"]
        monkeypatch.undo()
        await still_chats(pilot, "still here")


# --- the model picker with a server listed ---


@pytest.mark.parametrize("pick", ["server", "local"])
async def test_the_model_picker_with_a_server_listed_takes_any_choice(monkeypatch, pick):
    monkeypatch.setattr(
        "chatapp.serving.endpoint.endpoint_models",
        lambda url, api_key=None, timeout=2.0: [EndpointModel("remote-model", url)],
    )
    opened = []
    app = make_app(
        FakeBackend(), opener=lambda spec, backend, device: opened.append(spec) or FakeBackend(model_name=spec)
    )
    app.settings.endpoints.append(SERVER)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPickerScreen), what="the model picker")
        options = app.screen.query_one("#models", OptionList)
        ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
        remote = endpoint_spec(SERVER, "remote-model")
        assert remote in ids and len(ids) > 1
        spec = remote if pick == "server" else next(i for i in ids if i != remote)
        options.highlighted = ids.index(spec)
        await pilot.press("enter")
        await wait_until(pilot, lambda: opened == [spec], what="the chosen model to open")
        assert app.chat.conversation.settings["model"] == spec
        assert app.settings.extra_paths == [] and app.settings.endpoints == [SERVER]
        assert app.is_running


# --- Ctrl+C right after Enter, or right after a reply ended ---


def press_at_once(app, *keys: str) -> None:
    """Keys that arrive together (a fast typist, or a terminal that sends them in one burst)."""
    for key in keys:
        character = key if len(key) == 1 else {"enter": "\r", "space": " "}.get(key)
        app.post_message(events.Key(key, character))


async def test_what_is_typed_in_one_burst_with_enter_is_sent_whole():
    app = make_app(FakeBackend(replies=[["got it"]]))
    async with app.run_test() as pilot:
        await pilot.pause()
        app.chat.prompt.focus()
        press_at_once(app, *"burst", "space", *"one", "enter", *"next")
        await wait_idle(pilot)
        await pilot.pause()
        assert stored(app) == [("user", "burst one", "complete"), ("assistant", "got it", "complete")]
        assert app.chat.prompt.text == "next"  # typed after Enter: kept for the next message


async def test_ctrl_c_right_after_enter_saves_the_message_and_stops_its_reply():
    engine = FakeBackend(replies=[["a", "b", "c"], ["still here"]], hold_after=1)
    app = make_app(engine)
    async with app.run_test() as pilot:
        await pilot.pause()
        app.chat.prompt.focus()
        app.chat.prompt.text = "just sent"
        press_at_once(app, "enter", "ctrl+c")
        await wait_until(
            pilot,
            lambda: stored(app) and stored(app)[-1][2] != Status.STREAMING and app.chat.job is None,
            what="the reply to stop",
        )
        assert app.is_running
        assert stored(app)[0] == ("user", "just sent", "complete")
        assert stored(app)[-1][2] == Status.STOPPED
        assert any("Ctrl+C again quits" in n for n in notices(app))
        assert app.chat.prompt.text == ""
        await pilot.press("ctrl+c")  # the second press quits
        await wait_until(pilot, lambda: not app.is_running, what="the app to quit")


async def test_ctrl_c_twice_right_after_enter_quits_with_the_message_saved(tmp_path):
    path = tmp_path / "h.sqlite3"
    engine = FakeBackend(replies=[["a", "b", "c"]], hold_after=1)
    app = make_app(engine, store=HistoryStore(path))
    async with app.run_test() as pilot:
        await pilot.pause()
        app.chat.prompt.focus()
        app.chat.prompt.text = "just sent"
        press_at_once(app, "enter", "ctrl+c", "ctrl+c")
        await wait_until(pilot, lambda: not app.is_running, what="the app to quit")
    messages = HistoryStore(path).messages(HistoryStore(path).conversations()[0].id)
    assert [(m.role, m.content) for m in messages][0] == ("user", "just sent")
    assert messages[-1].status == Status.STOPPED


async def test_ctrl_c_just_after_a_reply_ended_asks_again_before_quitting(monkeypatch):
    monkeypatch.setattr("chatapp.tui.app.JUST_ENDED_S", 30.0)  # "just": whatever a loaded machine takes
    app = make_app(FakeBackend(replies=[["done"]]))
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await wait_idle(pilot)
        await pilot.press("ctrl+c")  # meant for the reply, which ended a moment before
        await pilot.pause()
        assert app.is_running
        assert any("just ended" in n and "Ctrl+C again quits" in n for n in notices(app))
        await pilot.press("ctrl+c")
        await wait_until(pilot, lambda: not app.is_running, what="the app to quit")


async def test_ctrl_c_just_after_esc_stopped_a_reply_asks_again_before_quitting(monkeypatch):
    monkeypatch.setattr("chatapp.tui.app.JUST_ENDED_S", 30.0)
    engine = FakeBackend(replies=[["a", "b", "c"]], hold_after=1)
    app = make_app(engine)
    async with app.run_test() as pilot:
        await send(pilot, "go")
        await wait_until(pilot, engine.holding.is_set, what="the reply to stream")
        await pilot.press("escape")
        await wait_idle(pilot)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.is_running


async def test_ctrl_c_long_after_a_reply_quits_at_once(monkeypatch):
    monkeypatch.setattr("chatapp.tui.app.JUST_ENDED_S", 0.0)
    app = make_app(FakeBackend(replies=[["done"]]))
    async with app.run_test() as pilot:
        await send(pilot, "hi")
        await wait_idle(pilot)
        await pilot.press("ctrl+c")
        await wait_until(pilot, lambda: not app.is_running, what="the app to quit")


async def test_enter_elsewhere_than_the_input_is_that_widgets_own():
    app = make_app(FakeBackend())
    async with app.run_test() as pilot:
        await pilot.press("ctrl+f")
        await pilot.press(*"abc", "enter")  # the filter box: no message is sent
        await pilot.pause()
        assert stored(app) == [] and app.chat.query_one("#filter").value == "abc"


# --- a server that was down when the app started ---


async def test_a_server_that_was_down_is_tried_again_on_the_next_send():
    server_up = False
    tries = []
    spec = endpoint_spec(SERVER, None)

    def opener(spec, backend, device):
        tries.append(spec)
        if not server_up:
            raise EndpointError(f"cannot reach {SERVER}: [Errno 111] Connection refused")
        return FakeBackend(replies=[["back again"]], model_name="remote-model")

    app = make_app(engine=None, model_spec=spec, opener=opener)
    app.engine = None
    async with app.run_test() as pilot:
        await wait_until(pilot, lambda: app.load_error is not None, what="the load error")
        banner = str(app.query_one("#banner").render())
        assert SERVER in banner and "Connection refused" in banner
        assert "endpoint:" not in banner and "v1#" not in banner  # a name, not the internal spec
        server_up = True
        await send(pilot, "hello again")
        await wait_until(pilot, lambda: app.engine is not None, what="the model to open")
        assert len(tries) == 2
        assert app.chat.prompt.text == "hello again"  # kept while it opened
        assert "v1#" not in " ".join(notices(app))
        await pilot.press("enter")
        await wait_idle(pilot)
        assert reply_texts(app) == ["back again"]


async def test_the_model_picker_names_a_server_and_its_model_not_the_internal_spec():
    from chatapp.tui.screens.models import current_index, current_name, model_phrase

    bare, named = endpoint_spec(SERVER, None), endpoint_spec(SERVER, "remote-model")
    assert current_name([], bare, None) == SERVER
    assert current_name([], named, None) == f"remote-model on {SERVER}"
    listed = [EndpointModel("first-model", SERVER), EndpointModel("other", SERVER)]
    assert current_index(listed, bare) == 0  # a server named alone serves its first model
    assert current_name(listed, bare, current_index(listed, bare)) == "first-model"
    assert model_phrase(bare) == f"the model on {SERVER}" and model_phrase(named) == f"model remote-model on {SERVER}"


# --- two windows on one history ---


def a_conversation(path, text: str) -> int:
    store = HistoryStore(path)
    conversation = store.create_conversation({})
    store.add_message(conversation.id, "user", text)
    store.remember_open(conversation.id)
    return conversation.id


async def test_a_second_window_does_not_open_the_conversation_another_window_has_open(tmp_path):
    path = tmp_path / "h.sqlite3"
    first = a_conversation(path, "the first window's")
    other_window = ConversationClaims(path)
    assert other_window.claim(first)
    app = make_app(FakeBackend(replies=[["second's reply"]]), store=HistoryStore(path))
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.chat.conversation.id != first
        assert any("open in another chatapp window" in n for n in notices(app))
        await send(pilot, "the second window's")
        await wait_idle(pilot)
        # nor by choosing it: it stays with its window
        second = app.chat.conversation.id
        await pilot.press("alt+down")
        await pilot.pause()
        assert app.chat.conversation.id == second
    assert [m.content for m in HistoryStore(path).messages(first)] == ["the first window's"]
    other_window.release_all()
    app = make_app(FakeBackend(), store=HistoryStore(path))
    async with app.run_test() as pilot:  # once that window closed, it opens as usual
        await pilot.pause()
        await pilot.press("alt+down")
        await pilot.pause()
        assert app.chat.conversation.id == first


async def test_two_windows_at_once_each_write_into_their_own_conversation(tmp_path):
    path = tmp_path / "h.sqlite3"
    first = a_conversation(path, "hello")
    one = make_app(FakeBackend(replies=[["one's reply"]]), store=HistoryStore(path))
    two = make_app(FakeBackend(replies=[["two's reply"]]), store=HistoryStore(path))
    async with one.run_test() as pilot_one:
        await pilot_one.pause()
        assert one.chat.conversation.id == first
        async with two.run_test() as pilot_two:
            await pilot_two.pause()
            assert two.chat.conversation.id != first
            await send(pilot_two, "from two")
            await wait_idle(pilot_two)
        await send(pilot_one, "from one")
        await wait_idle(pilot_one)
    store = HistoryStore(path)
    assert [m.content for m in store.messages(first)] == ["hello", "from one", "one's reply"]
    [other] = [c.id for c in store.conversations() if c.id != first]
    assert [m.content for m in store.messages(other)] == ["from two", "two's reply"]


async def test_a_conversation_another_instance_is_streaming_into_is_not_opened(tmp_path):
    path = tmp_path / "h.sqlite3"
    first = a_conversation(path, "hello")
    writer = HistoryStore(path)  # another instance, without claims: a reply of its streams into it
    writer.add_message(first, "assistant", "half a re", status=Status.STREAMING)
    app = make_app(FakeBackend(), store=HistoryStore(path))
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.chat.conversation.id != first
