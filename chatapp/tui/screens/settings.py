"""Per-conversation settings: model, backend, system prompt and sampling; and the app-wide CPU threads.

A bad value is refused where it is typed: the reason shows under the field, in
the words settings.toml's notices use (chatapp.settings.check_field, from
SamplingParams.validate), and Save names every field still wrong. "Use for new
chats" saves and also asks the caller to make these the defaults. CPU threads
are the app's, not the conversation's: a changed value goes to the app's
apply_threads (settings.toml, and the model reopened with them); so are the
limits of the saved prompts ([cache]), which go to apply_cache_limits.

A preset (chatapp/presets.py) picked at the top fills the fields, to be saved
as any change is; "Save as preset…" keeps the fields as a named preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from chatapp.models.opening import CacheLimits
from chatapp.presets import Preset, PresetError, PresetList, load_presets, save_preset
from chatapp.settings import SAMPLING_FIELDS, ChatDefaults, check_cache_mb, check_field, check_threads
from chatapp.tui.screens.dialogs import TextPromptScreen

THINKING_OPTIONS = [("model default", "default"), ("on", "on"), ("off", "off")]

# What each value does; the allowed range is check_field's to say, when a value is outside it.
FIELD_HELP = {
    "temperature": "0 is greedy; higher is more random",
    "top_p": "nucleus sampling; 1 is off",
    "top_k": "keep the k most likely tokens; 0 is off",
    "min_p": "drop tokens below min_p x the top probability; 0 is off",
    "repetition_penalty": "penalise recent tokens; 1 is off",
    "max_tokens": "the longest reply, in tokens",
    "seed": "empty: a fresh seed per reply; a number reproduces a reply",
}
BACKENDS = ("auto", "torch", "llama.cpp")
APP_FIELDS = {"threads": check_threads, "cache_memory_mb": check_cache_mb, "cache_disk_mb": check_cache_mb}  # the app's


@dataclass
class ConversationSettings:
    chat: ChatDefaults
    model: str  # a model spec; "" is the default model
    backend: str = "auto"
    as_default: bool = False  # the user asked for these chat settings in new conversations too


class SettingsScreen(ModalScreen[ConversationSettings | None]):
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+n", "save_as_default", "Save, and use for new chats"),
    ]

    def __init__(
        self,
        current: ConversationSettings,
        models: list[tuple[str, str]],
        thinking_switch: tuple[str | None, str] = (None, "no model is loaded"),
    ):
        """models: (label, spec) pairs for the model choice; thinking_switch: the model's template
        variable for thinking on / off, or None and why there is none (model.inference.backend)."""
        super().__init__()
        self.current = current
        self.models = models
        self.thinking_switch = thinking_switch
        self.errors: dict[str, str] = {}
        self.presets: PresetList = load_presets()

    def preset_options(self) -> list[tuple[str, str]]:
        return [(f"{p.name} ({p.source})", p.name) for p in self.presets.presets]

    def compose(self):
        chat = self.current.chat
        with VerticalScroll(classes="dialog wide", id="settings-panel"):
            yield Label("Conversation settings", classes="title")
            yield Label("Preset  (fills the fields below; Save keeps them)")
            with Horizontal(classes="buttons", id="preset-row"):
                yield Select(self.preset_options(), allow_blank=True, prompt="apply a preset…", id="preset")
                yield Button("Save as preset…", id="save-preset")
            yield Label("Model")
            specs = [spec for _, spec in self.models]
            yield Select(
                self.models,
                value=self.current.model if self.current.model in specs else Select.NULL,
                allow_blank=True,
                prompt="default model",
                id="model",
            )
            yield Label("Backend")
            yield Select([(b, b) for b in BACKENDS], value=self.current.backend, allow_blank=False, id="backend")
            yield Label("CPU threads (0 = automatic)  (for every conversation; the model reloads)")
            yield Input(str(self.app_threads()), id="threads", classes="sampling")
            yield Static("", id="threads-error", classes="field-error", markup=False)
            limits = self.app_cache_limits()
            yield Label("Saved prompts in memory, MB  (coming back to a chat computes only its new text; 0 = none)")
            yield Input(str(limits.memory_mb), id="cache_memory_mb", classes="sampling")
            yield Static("", id="cache_memory_mb-error", classes="field-error", markup=False)
            yield Label("Saved prompts on disk, MB  (llama.cpp models, kept across restarts; 0 = none)")
            yield Input(str(limits.disk_mb), id="cache_disk_mb", classes="sampling")
            yield Static("", id="cache_disk_mb-error", classes="field-error", markup=False)
            yield Label("System prompt")
            yield TextArea(chat.system_prompt, id="system_prompt", soft_wrap=True, tab_behavior="focus")
            for name in SAMPLING_FIELDS:
                value = getattr(chat, name)
                yield Label(f"{name.replace('_', ' ')}  ({FIELD_HELP[name]})")
                yield Input("" if value is None else str(value), id=name, classes="sampling")
                yield Static("", id=f"{name}-error", classes="field-error", markup=False)
            switch, why_not = self.thinking_switch
            yield Label(f"thinking  ({f'the template switch {switch}' if switch else why_not})", id="thinking-label")
            yield Select(
                THINKING_OPTIONS,
                value=chat.thinking if chat.thinking in dict(THINKING_OPTIONS).values() else "default",
                allow_blank=False,
                id="thinking",
                disabled=switch is None,
            )
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Use for new chats too", id="save-as-default")
                yield Button("Cancel", id="cancel")
            yield Label(
                "Ctrl+S saves for this chat · Ctrl+N saves and uses these for new chats too · Esc cancels",
                classes="hint",
            )

    def app_threads(self) -> int:
        settings = getattr(self.app, "settings", None)  # the ChatApp's settings; absent in a bare test App
        return int(getattr(settings, "threads", 0))

    def app_cache_limits(self) -> CacheLimits:
        return getattr(getattr(self.app, "settings", None), "cache", CacheLimits())

    def on_mount(self) -> None:
        for name in SAMPLING_FIELDS:  # a value stored before a rule changed is refused at once, not on Save
            self.check(name, self.query_one(f"#{name}", Input).value)
        for name in APP_FIELDS:
            self.check(name, self.query_one(f"#{name}", Input).value)
        self.query_one("#preset", Select).styles.width = "1fr"
        for notice in self.presets.notices:
            self.notify(notice, severity="warning", timeout=10)
        self.query_one("#model", Select).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "preset" and event.value is not Select.NULL:
            preset = self.presets.get(str(event.value))
            if preset is not None:
                self.fill_from(preset)

    def fill_from(self, preset: Preset) -> None:
        """The preset's values in the fields (checked as if typed); its model, if it names one listed."""
        chat = preset.chat
        self.query_one("#system_prompt", TextArea).text = chat.system_prompt
        for name in SAMPLING_FIELDS:
            value = getattr(chat, name)
            self.query_one(f"#{name}", Input).value = "" if value is None else str(value)
        self.query_one("#thinking", Select).value = chat.thinking
        if preset.model:
            spec = next((s for label, s in self.models if preset.model in (s, label.rsplit(" (", 1)[0])), None)
            if spec is None:
                self.notify(f"The preset's model {preset.model} is not among the models here; the model stays")
            else:
                self.query_one("#model", Select).value = spec

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id in (*SAMPLING_FIELDS, *APP_FIELDS):
            self.check(event.input.id, event.value)

    def check(self, name: str, text: str) -> None:
        _, error = APP_FIELDS[name](text) if name in APP_FIELDS else check_field(name, text.strip())
        if error:
            self.errors[name] = error
        else:
            self.errors.pop(name, None)
        message = self.query_one(f"#{name}-error", Static)
        message.update(error or "")
        message.display = bool(error)
        self.query_one(f"#{name}", Input).set_class(bool(error), "invalid")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        elif event.button.id == "save-preset":
            self.ask_preset_name()
        elif event.button.id == "save-as-default":
            self.action_save_as_default()
        else:
            self.dismiss(None)

    def refused(self) -> bool:
        """Whether a field is still wrong; the notice names each, and the first one takes the focus."""
        if not self.errors:
            return False
        wrong = [name for name in (*APP_FIELDS, *SAMPLING_FIELDS) if name in self.errors]
        self.notify(
            "\n".join(self.errors[name] for name in wrong),
            title=f"Not saved: fix {', '.join(wrong)}",
            severity="warning",
            timeout=8,
        )
        self.query_one(f"#{wrong[0]}", Input).focus()
        return True

    def chat_fields(self) -> ChatDefaults:
        values: dict[str, Any] = {
            name: check_field(name, self.query_one(f"#{name}", Input).value.strip())[0] for name in SAMPLING_FIELDS
        }  # each checked: of its field's type
        thinking = str(self.query_one("#thinking", Select).value)
        return ChatDefaults(system_prompt=self.query_one("#system_prompt", TextArea).text, thinking=thinking, **values)

    def ask_preset_name(self) -> None:
        if self.refused():
            return
        chosen = self.presets.get(str(self.query_one("#preset", Select).value))
        suggested = chosen.name if chosen is not None and not chosen.builtin else ""
        self.app.push_screen(TextPromptScreen("Save these settings as the preset named:", suggested), self.save_preset)

    def save_preset(self, name: str | None) -> None:
        if not name or not name.strip():
            return
        model = self.query_one("#model", Select).value
        preset = Preset(name.strip(), self.chat_fields(), "" if model is Select.NULL else str(model))
        try:
            path = save_preset(preset)
        except PresetError as error:
            self.notify(str(error), title="Preset not saved", severity="error", timeout=10)
            return
        self.presets = load_presets()
        self.query_one("#preset", Select).set_options(self.preset_options())
        self.notify(f"Saved as the preset {preset.name} ({path}); Ctrl+P finds it")

    def action_save(self, as_default: bool = False) -> None:
        if self.refused():
            return
        chat = self.chat_fields()
        model = self.query_one("#model", Select).value
        backend = str(self.query_one("#backend", Select).value)
        threads = check_threads(self.query_one("#threads", Input).value)[0]
        apply_threads = getattr(self.app, "apply_threads", None)  # ChatApp.apply_threads
        if threads is not None and threads != self.app_threads() and apply_threads is not None:
            apply_threads(threads)
        memory_mb = check_cache_mb(self.query_one("#cache_memory_mb", Input).value)[0]
        disk_mb = check_cache_mb(self.query_one("#cache_disk_mb", Input).value)[0]
        limits = CacheLimits(memory_mb or 0, disk_mb or 0)  # both checked: refused() passed
        apply_cache_limits = getattr(self.app, "apply_cache_limits", None)  # ChatApp.apply_cache_limits
        if limits != self.app_cache_limits() and apply_cache_limits is not None:
            apply_cache_limits(limits)
        self.dismiss(ConversationSettings(chat, "" if model is Select.NULL else str(model), backend, as_default))

    def action_save_as_default(self) -> None:
        self.action_save(as_default=True)
