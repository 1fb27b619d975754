"""Chat presets in the command palette (Ctrl+P, "Preset: NAME"): one applies to the open chat."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content

from chatapp.presets import Preset, load_presets, one_line_summary
from chatapp.tui.failures import failures_as_notices

if TYPE_CHECKING:
    from chatapp.tui.screens.chat import ChatScreen

COMMAND_PREFIX = "Preset: "


class PresetCommands(Provider):
    presets: list[Preset] = []

    async def startup(self) -> None:
        """Read once each time the palette opens (not at every key typed): a broken file is one notice."""
        found = load_presets()
        for notice in found.notices:
            self.app.notify(notice, severity="warning", timeout=10)
        self.presets = found.presets

    async def discover(self) -> Hits:
        for preset in self.presets:
            yield DiscoveryHit(
                Content(COMMAND_PREFIX + preset.name), partial(self.apply, preset), help=one_line_summary(preset)
            )

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for preset in self.presets:
            command = COMMAND_PREFIX + preset.name
            score = matcher.match(command)
            if score > 0:
                yield Hit(score, matcher.highlight(command), partial(self.apply, preset), help=one_line_summary(preset))

    def apply(self, preset: Preset) -> None:
        apply_preset(cast("ChatScreen", self.app.chat), preset)  # type: ignore[attr-defined]  # ChatApp's


def apply_preset(chat: ChatScreen, preset: Preset) -> None:
    """The preset's chat settings (and its model, if it names one) become the open conversation's,
    as if saved in its settings panel."""

    conversation = chat.current
    chosen = {**conversation.settings, "chat": preset.chat.to_dict()}
    if preset.model:
        chosen["model"] = preset.model
    with failures_as_notices(chat):
        chat.store.save_settings(conversation.id, chosen)
        chat.conversation = chat.store.conversation(conversation.id)
        chat.notify(f"Preset {preset.name} applied to this chat")
        chat.update_context()
        if chat.job is None and chat.wanted_spec() != chat.chat_app.loaded_spec:
            chat.load_wanted_model()
