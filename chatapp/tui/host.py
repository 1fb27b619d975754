"""What the screens read of the app, typed: ChatApp (app.py) is what they run in, but the app imports
them, so they name it through this protocol instead of importing it back (no import cycle). app.py
checks that ChatApp is one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from chatapp.history import HistoryStore
from chatapp.settings import Settings
from model.inference.backend import Backend

if TYPE_CHECKING:
    from chatapp.models.registry import ModelRef
    from chatapp.presets import Preset
    from chatapp.serving.endpoint import EndpointModel

    ModelChoice = ModelRef | EndpointModel  # a local model, or one a server offers


class ChatHost(Protocol):
    settings: Settings
    default_spec: str  # the model a conversation without its own gets ("" is the built-in one)
    start_preset: Preset | None  # `chat --preset NAME`: the first conversation is a new one with it
    backend_kind: str
    engine: Backend | None  # None while a model loads, or when it failed to
    loaded_spec: str | None  # the spec of the model loaded, or being loaded
    load_error: str | None  # why the last load failed, in one line
    model_description: str
    history_notice: str | None  # shown in the banner while the history is not saved

    @property
    def store(self) -> HistoryStore: ...

    def start_loading(self, spec: str, backend: str) -> None: ...

    def model_title(self) -> str: ...

    def model_choices(self) -> list[ModelChoice]: ...

    def remember_model_path(self, spec: str, choices: list[ModelChoice] | None = None) -> None: ...

    async def open_conversation(self, conversation_id: int, message_id: int | None = None) -> None: ...
