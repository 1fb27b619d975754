"""The conversation: user messages as typed, replies as Markdown streamed in, with their numbers.

A reply streams into Textual's Markdown widget (one widget per block, which it can
grow piece by piece) and, once finished, becomes one Static rendering Rich's
Markdown: a long log of block widgets makes every layout slow.

A message with siblings (other branches of the conversation at that point) shows
"‹ branch 2/3 ›"; a click on either half steps to the branch before or after.
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from rich.markdown import Markdown as RichMarkdown
from rich.text import Text
from textual import events
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Label, Markdown, Static
from textual.widgets.markdown import MarkdownStream

from chatapp.history import Status

STATUS_NOTES = {
    Status.STREAMING: "",
    Status.COMPLETE: "",
    Status.STOPPED: "stopped",
    Status.LENGTH: "stopped at the length limit (Ctrl+G continues)",
    Status.INTERRUPTED: "interrupted: the app closed before this reply finished",
    Status.ERROR: "failed",
}
UNFINISHED_LOOK = (Status.INTERRUPTED, Status.ERROR, Status.STOPPED)  # shown dimmed, with their note


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """ "1 token", "2 tokens", "1,000 replies"."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def format_stats(stats: dict | None) -> str:
    if not stats:
        return ""
    parts = [f"finish: {stats.get('reason', '?')}", counted(stats.get("completion_tokens", 0), "token")]
    if stats.get("tokens_per_second"):
        parts.append(f"{stats['tokens_per_second']:.1f} tok/s")
    if stats.get("time_to_first_token_s") is not None:
        parts.append(f"first token {stats['time_to_first_token_s'] * 1000:.0f} ms")
    return " · ".join(parts)


def reply_markdown_parser() -> MarkdownIt:
    """GitHub-like Markdown in which a single newline breaks the line: the built-in model writes verse,
    and Markdown would join its lines into one paragraph."""
    parser = MarkdownIt("gfm-like")
    parser.core.ruler.push("hard_line_breaks", _soft_breaks_to_hard)
    return parser


def _soft_breaks_to_hard(state) -> None:
    soft_breaks_to_hard(state.tokens)


def soft_breaks_to_hard(tokens) -> None:
    for token in tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type = "hardbreak"


def finished_reply(content: str) -> RichMarkdown:
    markdown = RichMarkdown(content, code_theme="monokai")
    soft_breaks_to_hard(markdown.parsed)  # verse keeps its lines, as in the streaming view
    return markdown


class FinishedReply(Static):
    """A finished reply: one widget, whatever its length."""

    def __init__(self, content: str):
        self.markdown = finished_reply(content)
        super().__init__(self.markdown, classes="body")


def thinking_summary(stats: dict | None, streaming: bool) -> str:
    """The thinking block's head: "thinking… 312 tokens, 9.4 s" (its numbers once the reply has them)."""
    stats = stats or {}
    numbers = []
    if stats.get("thinking_tokens"):
        numbers.append(counted(stats["thinking_tokens"], "token"))
    if stats.get("thinking_s"):
        numbers.append(f"{stats['thinking_s']:.1f} s")
    head = "thinking…" if streaming or numbers else "thinking"
    return f"{head} {', '.join(numbers)}".rstrip()


class ThinkingBlock(Static):
    """A reasoning model's thinking, above its answer: dimmed, collapsed to one line until opened
    (a click, or the toggle-thinking key)."""

    def __init__(self, thinking: str, stats: dict | None, streaming: bool):
        super().__init__("", classes="thinking", markup=False)
        self.thinking, self.stats, self.streaming = thinking, stats, streaming
        self.expanded = False

    def on_mount(self) -> None:
        self.refresh_text()

    def refresh_text(self) -> None:
        self.display = bool(self.thinking)
        head = ("▾ " if self.expanded else "▸ ") + thinking_summary(self.stats, self.streaming)
        self.update(Text(head + ("\n" + self.thinking.strip("\n") if self.expanded else "")))
        self.set_class(self.expanded, "expanded")

    def toggle(self) -> None:
        self.expanded = not self.expanded
        self.refresh_text()

    def on_mouse_down(self) -> None:
        """On press, not on click: the press focuses the message, whose focus border moves the
        block, so the release may land beside it (and a Click is never sent)."""
        self.toggle()


class BranchSwitcher(Static):
    """ "‹ branch 2/3 ›" under a message with siblings: a click on its left half shows the branch
    before, on its right half the one after."""

    def __init__(self, text: str):
        super().__init__(f"‹ {text} ›", classes="branches", markup=False)

    def on_click(self, event: events.Click) -> None:
        message = next((a for a in self.ancestors if isinstance(a, ChatMessage)), None)
        if message is not None:
            event.stop()
            step = -1 if event.x < self.content_size.width // 2 else +1
            self.post_message(ChatMessage.StepBranch(message.message_id, step))


class ChatMessage(Vertical):
    """One message; focusable so that it can be selected for copy, the inspector, an edit or a fork."""

    DEFAULT_CSS = """
    ChatMessage .branches { color: $text-muted; width: auto; }
    ChatMessage .branches:hover { color: $accent; }
    ChatMessage.found { border-left: thick $warning; }
    """

    can_focus = True

    class StepBranch(Message):
        """A click on a message's branch switcher: show its sibling `step` away."""

        def __init__(self, message_id: int, step: int):
            super().__init__()
            self.message_id, self.step = message_id, step

    def __init__(
        self,
        message_id: int,
        role: str,
        content: str,
        status: str = Status.COMPLETE,
        branch: int = 1,
        branch_count: int = 1,
        **kwargs,
    ):
        super().__init__(classes=f"message {role}", **kwargs)
        self.message_id = message_id
        self.role = role
        self.content = content
        self.status = status
        self.branch, self.branch_count = branch, branch_count

    def branch_text(self) -> str:
        """ "branch 2/3" where the conversation branches at this message, else ""."""
        return f"branch {self.branch}/{self.branch_count}" if self.branch_count > 1 else ""

    def branch_switcher(self) -> list[BranchSwitcher]:
        return [BranchSwitcher(self.branch_text())] if self.branch_count > 1 else []

    def set_out_of_context(self, out: bool) -> None:
        if self.has_class("out-of-context") != out:  # a class change restyles the widget: costly in a long log
            self.set_class(out, "out-of-context")


class UserMessage(ChatMessage):
    def compose(self):
        yield Label("You", classes="role")
        yield Static(Text(self.content), classes="body")
        yield from self.branch_switcher()


class AssistantMessage(ChatMessage):
    """A reply: a MarkdownStream while it streams, one full render at the end."""

    def __init__(
        self,
        message_id: int,
        content: str,
        status: str = Status.COMPLETE,
        stats: dict | None = None,
        error: str | None = None,
        model_name: str = "Assistant",
        branch: int = 1,
        branch_count: int = 1,
        thinking: str = "",
        **kwargs,
    ):
        super().__init__(message_id, "assistant", content, status, branch, branch_count, **kwargs)
        self.thinking = thinking  # a reasoning model's thinking, shown apart above the answer
        self.stats, self.error, self.model_name = stats, error, model_name
        self._stream: MarkdownStream | None = None

    def compose(self):
        yield Label(self.model_name, classes="role")
        yield ThinkingBlock(self.thinking, self.stats, self.status == Status.STREAMING)
        if self.status == Status.STREAMING:
            yield Markdown(self.content, classes="body", parser_factory=reply_markdown_parser)
        else:
            yield FinishedReply(self.content)
        yield Label(self.footer_text(), classes="stats")
        yield from self.branch_switcher()

    def footer_text(self) -> str:
        parts = [format_stats(self.stats), STATUS_NOTES.get(self.status, self.status)]
        if self.error:
            parts.append(f"error: {self.error}")
        return "  ".join(p for p in parts if p)

    def on_mount(self) -> None:
        self.set_class(self.status in UNFINISHED_LOOK, "unfinished")
        if self.status == Status.STREAMING:
            self._stream = Markdown.get_stream(self.query_one(Markdown))

    async def append(self, text: str, end: int) -> None:
        """Add a piece that ends at `end` characters; what this view already has is skipped."""
        new = end - len(self.content)
        if new <= 0:
            return
        text = text[-new:]
        self.content += text
        if self._stream is not None:
            await self._stream.write(text)

    def append_thinking(self, text: str, end: int) -> None:
        """Add a piece of thinking that ends at `end` characters (what this view has is skipped)."""
        new = end - len(self.thinking)
        if new <= 0:
            return
        self.thinking += text[-new:]
        block = self.thinking_block
        if block is not None:
            block.thinking = self.thinking
            block.refresh_text()

    @property
    def thinking_block(self) -> ThinkingBlock | None:
        return next(iter(self.query(ThinkingBlock)), None)

    def toggle_thinking(self) -> bool:
        """Open or close the thinking; False where the reply has none."""
        block = self.thinking_block
        if block is None or not self.thinking:
            return False
        block.toggle()
        return True

    async def finish(
        self, content: str, status: str, stats: dict | None, error: str | None = None, thinking: str | None = None
    ) -> None:
        block = self.thinking_block
        if block is not None:
            if thinking is not None:
                self.thinking = block.thinking = thinking
            block.stats, block.streaming = stats, False
            block.refresh_text()
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.content, self.status, self.stats, self.error = content, status, stats, error
        for body in [*self.query(Markdown), *self.query(FinishedReply)]:
            await body.remove()
        if not self.is_attached:
            return  # removed meanwhile (the app is closing, or another branch is shown)
        await self.mount(FinishedReply(content), before=self.query_one(".stats", Label))
        self.query_one(".stats", Label).update(self.footer_text())
        self.set_class(status in UNFINISHED_LOOK, "unfinished")

    def code_blocks(self) -> list[str]:
        blocks: list[str] = []
        current: list[str] = []
        inside = False
        for line in self.content.splitlines():
            if line.strip().startswith("```"):
                if inside:
                    blocks.append("\n".join(current))
                    current = []
                inside = not inside
            elif inside:
                current.append(line)
        return blocks


class ChatLog(VerticalScroll):
    """The messages; follows a streaming reply unless the user scrolls up, and asks
    for earlier messages when the user reaches the top (later ones at the bottom)."""

    class NearTop(Message):
        """The user scrolled to the top: time to load earlier messages."""

    class NearBottom(Message):
        """The user scrolled to the bottom: time to load later messages (where the log stops short of them)."""

    NEAR_TOP_ROWS = 2
    more_below = False  # later messages are not mounted (the chat screen says so): NearBottom asks for them

    def on_mount(self) -> None:
        self.anchor()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value < old_value and new_value <= self.NEAR_TOP_ROWS:
            self.post_message(self.NearTop())
        elif self.more_below and new_value > old_value and new_value >= self.max_scroll_y - self.NEAR_TOP_ROWS:
            self.post_message(self.NearBottom())

    async def prepend(self, widgets: list[Widget]) -> None:
        """Mount widgets above the others without moving what the user is looking at."""
        height_before = self.virtual_size.height
        await self.mount_all(widgets, before=0)

        def keep_place() -> None:
            self.scroll_to(y=self.scroll_y + self.virtual_size.height - height_before, animate=False)

        self.call_after_refresh(keep_place)

    def message_widgets(self) -> list[ChatMessage]:
        return [child for child in self.children if isinstance(child, ChatMessage)]

    def widget_for(self, message_id: int) -> ChatMessage | None:
        return next((w for w in self.message_widgets() if w.message_id == message_id), None)
