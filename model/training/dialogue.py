"""Chat conversations from the plays: every speech answered by another
character's speech is a (user, assistant) turn.

A play in the corpus is a list of paragraphs separated by blank lines. A
speech starts with a paragraph whose first line is the speaker's name alone
(`Ham.`, `LADY MACBETH.`, or `THESEUS` without the period); `ACT` / `SCENE`
headings and the prologue / epilogue end a scene; stage directions in
[brackets] are cut out, and a paragraph after a stage direction carries on the
speech before it.

Within a scene, every pair of consecutive speeches by different speakers
becomes a one-turn conversation, and every stretch where two speakers take
turns becomes short multi-turn conversations. The replying character becomes a
persona system prompt ("You are Horatio, friend to Hamlet."; the title
"HAMLET, PRINCE OF DENMARK" describes its hero) when its name can be found in
the play's list of persons.

Use `dialogue_split()`: conversations from the training part of each work for
training, from the held-out part (the base model's validation split) for
validation, so the held-out text stays held out. Torch-free.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from model.text.chat_format import Message
from model.training.corpus import Work, builtin_split

MAX_SPEAKER_CHARS = 40
MAX_WINDOW_SPEECHES = 6  # a multi-turn conversation: up to three exchanges
PLAIN_OPENERS = (
    "Speak.",
    "What say you?",
    "Say on.",
    "How now?",
    "Who are you?",
    "What news?",
    "Speak your mind.",
    "Good morrow.",
    "Tell me of yourself.",
    "Well?",
)
OPENING_SHARE = 3  # one speech in this many (with a persona) also answers a plain opener
HEADING = re.compile(r"^(ACT|SCENE|PROLOGUE|EPILOGUE|INDUCTION|THE END|FINIS)\b", re.IGNORECASE)
SPEAKER = re.compile(r"^(?:\d |[A-Z])[A-Za-z'’ .&-]*[A-Za-z]\.?$")
NOT_SPEAKERS = {"song", "the end", "finis", "enter", "exit", "exeunt", "flourish", "alarum", "alarums"}
PERSONS_HEADER = re.compile(r"^(persons represented|dramatis person(ae|æ))[.:]?$", re.IGNORECASE)
STAGE_DIRECTION = re.compile(r"\[[^\]}]*(?:[\]}]|$)")  # some editions close with }
UNBRACKETED_DIRECTION = re.compile(r"^(Enter|Exit|Exeunt|Re-enter|Manet|Flourish|Alarum)\b")
RELATIVE_DESCRIPTION = re.compile(
    r"^(his|her|their|and|the two)\b|\b(the former|the same|the above|the latter)\b", re.IGNORECASE
)
TITLED = re.compile(
    r"^(King|Queen|Duke|Duchess|Earl|Prince|Princess|Archbishop|Bishop|Cardinal|Marquis|Count|Countess|Lord|Lady|Sir)\b"
)
SMALL_WORDS = {"of", "the", "and", "to", "in", "de", "la", "le"}


@dataclass(frozen=True)
class Speech:
    speaker: str  # as printed, without the final period: "Ham", "LADY MACBETH"
    text: str


@dataclass(frozen=True)
class SceneConversation:
    work: str
    speakers: tuple[str, ...]  # the speaker of each non-system message
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class DialogueSplit:
    train: list[SceneConversation]
    validation: list[SceneConversation]


# --- reading a play ---


def paragraphs(text: str) -> list[list[str]]:
    """Blank-line-separated groups of lines, stage directions cut out (one left
    unclosed by the edition ends with its paragraph)."""
    groups = []
    for block in re.split(r"\n\s*\n", text.replace("\r", "")):
        lines = [line for line in STAGE_DIRECTION.sub("", block).split("\n") if line.strip()]
        if lines:
            groups.append(lines)
    return groups


def speaker_name(line: str) -> str | None:
    """The name if the line looks like a speaker line, else None."""
    line = line.strip()
    if len(line) > MAX_SPEAKER_CHARS or not SPEAKER.match(line) or HEADING.match(line):
        return None
    name = line.rstrip(".").strip()
    if name.lower() in NOT_SPEAKERS:
        return None
    # without a final period only capitals count (THESEUS), not verse ("So is Lysander")
    if not line.endswith(".") and not name.isupper():
        return None
    return name


def known_speakers(groups: list[list[str]], people: list[tuple[str, str]]) -> set[str]:
    """Names that open a paragraph with a speech after them, and are in capitals,
    or recur, or are in the list of persons: a one-off "Go to." is verse."""
    counts: dict[str, int] = {}
    for group in groups:
        name = speaker_name(group[0])
        if name and len(group) > 1:
            counts[name] = counts.get(name, 0) + 1
    return {name for name, count in counts.items() if count >= 2 or name.isupper() or find_person(name, people)}


def clean_speech(lines: list[str]) -> str:
    kept = [re.sub(r"\s+", " ", line).strip() for line in lines]
    return "\n".join(line for line in kept if line)


def scenes(text: str, people: list[tuple[str, str]] | None = None) -> list[list[Speech]]:
    """The speeches of a play (or part of one), scene by scene; people: the
    play's list of persons when the text is a part without it."""
    groups = paragraphs(text)
    speakers = known_speakers(groups, persons(text) if people is None else people)
    result: list[list[Speech]] = [[]]
    speaker: str | None = None
    lines: list[str] = []

    def close_speech():
        if speaker and clean_speech(lines):
            result[-1].append(Speech(speaker, clean_speech(lines)))

    for group in groups:
        first = group[0].strip()
        if HEADING.match(first):
            close_speech()
            speaker, lines = None, []
            if result[-1]:
                result.append([])
            continue
        name = speaker_name(first)
        if name in speakers:
            close_speech()
            speaker, lines = name, group[1:]
        elif UNBRACKETED_DIRECTION.match(first):
            continue
        elif speaker:
            lines = lines + group
    close_speech()
    return [scene for scene in result if scene]


# --- personas from the list of persons ---


def persons(text: str) -> list[tuple[str, str]]:
    """(name, description) for each entry of the play's list of persons. A title
    like "HAMLET, PRINCE OF DENMARK" gives its hero the title's description."""
    lines = text.replace("\r", "").split("\n")
    start = next((i for i, line in enumerate(lines[:200]) if PERSONS_HEADER.match(line.strip())), None)
    if start is None:
        return []
    entries = []
    for line in lines[start + 1 :]:
        line = line.strip()
        if HEADING.match(line) or line.upper().startswith("SCENE"):
            break
        if not line or line[0].islower() or line[0] in " }":
            continue
        separator = re.search(r",| - ", line)
        name, description = (line[: separator.start()], line[separator.end() :]) if separator else (line, "")
        name = name.strip().rstrip(".")
        if name and len(name) <= MAX_SPEAKER_CHARS and not is_group_line(line):
            entries.append((name, clean_description(description)))
    title_name, _, title_description = lines[0].strip().partition(",")
    for index, (name, _) in enumerate(entries):
        if title_description and name.lower() == title_name.strip().lower():
            entries[index] = (name, display_name(title_description.strip()))
    return entries


def is_group_line(line: str) -> bool:
    """ "Lords, Ladies, Officers, and Attendants.": extras, not a person."""
    items = [item.strip(" .") for item in line.split(",")]
    return len(items) >= 3 and all(len(item.split()) <= 2 and item[:1].isupper() for item in items if item)


def clean_description(description: str) -> str:
    """The description, or "" when it is cut off at the line end or made of ditto marks."""
    description = re.sub(r"\s+", " ", description).strip().rstrip(".;").strip()
    last_word = description.split(" ")[-1].lower() if description else ""
    if '"' in description or last_word in {"of", "to", "and", "the", "by", "with", "for", "a", "an"}:
        return ""
    return description


def display_name(name: str) -> str:
    """KING HENRY V -> King Henry V; KING OF FRANCE -> King of France; Lady Capulet stays."""

    def word(position: int, w: str) -> str:
        if re.fullmatch(r"[IVX]+", w) or not w.isupper():
            return w
        if position > 0 and w.lower() in SMALL_WORDS:
            return w.lower()
        return w.capitalize()

    return " ".join(word(i, w) for i, w in enumerate(name.split()))


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower().replace("mrs.", "mistress"))


def contains_run(haystack: list[str], needle: list[str]) -> bool:
    return any(haystack[i : i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


def find_person(speaker: str, people: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The list entry for a speaker, by the first rule that finds exactly one:
    the same name; the speaker's words opening, closing or within the name
    (KING -> King Henry the Fourth, ANTONY -> M.ANTONY, Kent -> Earl of Kent);
    an abbreviation of a word of the name (Ham -> Hamlet);
    the name in the description's first clause (GLOSTER -> RICHARD, DUKE OF
    GLOSTER); a title opening the description (King -> Claudius, King of Denmark)."""
    key = words(speaker)
    if not key:
        return None
    rules = [
        lambda name, first_clause: words(name) == key,
        lambda name, first_clause: words(name)[: len(key)] == key,
        lambda name, first_clause: words(name)[-len(key) :] == key,
        lambda name, first_clause: contains_run(words(name), key),
        lambda name, first_clause: (
            len(key) == 1 and len(key[0]) >= 3 and any(w.startswith(key[0]) for w in words(name)[:1] + words(name)[-1:])
        ),
        lambda name, first_clause: contains_run(words(first_clause), key),
        lambda name, first_clause: words(first_clause)[: len(key)] == key,
    ]
    for rule in rules:
        found = [p for p in people if rule(p[0], p[1].split(",")[0])]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            return None
    return None


def with_article(name: str) -> str:
    """Earl of Kent -> the Earl of Kent; The Constable -> the Constable; Lord Hastings stays."""
    if re.match(r"^(The|A|An) ", name):
        return name[0].lower() + name[1:]
    return f"the {name}" if TITLED.match(name) and " of " in name else name


def persona_prompt(speaker: str, people: list[tuple[str, str]], with_description: bool = True) -> str | None:
    person = find_person(speaker, people)
    if person is None:
        return None
    name = with_article(display_name(re.sub(r"\b[A-Z]\.\s*", "", person[0])))
    description = display_name(person[1])
    if with_description and description and not RELATIVE_DESCRIPTION.search(description):
        if not TITLED.match(description):  # "General in the King's Army" -> "general in ..."
            description = description[:1].lower() + description[1:]
        return f"You are {name}, {description}."
    return f"You are {name}."


# --- conversations ---


def system_prompt_for(work: str, index: int, speaker: str, people) -> str | None:
    """A persona for most conversations, chosen by a stable hash: a quarter get
    no system prompt (plain chat), a quarter the name alone."""
    choice = zlib.crc32(f"{work}:{index}".encode()) % 4
    if choice == 0:
        return None
    return persona_prompt(speaker, people, with_description=choice >= 2)


def alternating_windows(scene: list[Speech]) -> list[list[Speech]]:
    """Stretches of 4 to MAX_WINDOW_SPEECHES speeches where two speakers take turns."""
    windows, run = [], [scene[0]] if scene else []
    for speech in scene[1:]:
        if speech.speaker != run[-1].speaker and (len(run) < 2 or speech.speaker == run[-2].speaker):
            run.append(speech)
        else:
            windows += chunk_run(run)
            run = [run[-1], speech] if speech.speaker != run[-1].speaker else [speech]
    windows += chunk_run(run)
    return windows


def chunk_run(run: list[Speech]) -> list[list[Speech]]:
    chunks = []
    for start in range(0, len(run), MAX_WINDOW_SPEECHES):
        chunk = run[start : start + MAX_WINDOW_SPEECHES]
        chunk = chunk[: len(chunk) // 2 * 2]  # end on the assistant
        if len(chunk) >= 4:
            chunks.append(chunk)
    return chunks


def conversation(work: str, index: int, speeches: list[Speech], people) -> SceneConversation:
    assistant = speeches[-1].speaker
    messages = [Message("assistant" if s.speaker == assistant else "user", s.text) for s in speeches]
    system = system_prompt_for(work, index, assistant, people)
    if system:
        messages.insert(0, Message("system", system))
    return SceneConversation(work, tuple(s.speaker for s in speeches), tuple(messages))


def work_conversations(work: Work, people: list[tuple[str, str]] | None = None) -> list[SceneConversation]:
    """One-turn pairs, then multi-turn windows, from one work (or part of one)."""
    people = persons(work.text) if people is None else people
    results: list[SceneConversation] = []
    for scene in scenes(work.text, people):
        for previous, reply in zip(scene, scene[1:]):
            if previous.speaker != reply.speaker:
                results.append(conversation(work.name, len(results), [previous, reply], people))
        for window in alternating_windows(scene):
            results.append(conversation(work.name, len(results), window, people))
    return results


def persona_openings(work: Work, people: list[tuple[str, str]]) -> list[SceneConversation]:
    """Speeches as the reply to a plain opener under the speaker's persona
    ("You are Sir John Falstaff." / "Speak." / one of Falstaff's speeches), for
    one speech in OPENING_SHARE. Here only the persona tells who answers, so
    fine-tuning learns to use it; in the plays' own pairs the message before
    mostly tells it too, and a model can ignore the persona there."""
    results = []
    speeches = [speech for scene in scenes(work.text, people) for speech in scene]
    for index, speech in enumerate(speeches):
        choice = zlib.crc32(f"{work.name}:opening:{index}".encode())
        if choice % OPENING_SHARE:
            continue
        persona = persona_prompt(speech.speaker, people, with_description=choice % 2 == 0)
        if persona is None:
            continue
        opener = PLAIN_OPENERS[choice // OPENING_SHARE % len(PLAIN_OPENERS)]
        messages = (Message("system", persona), Message("user", opener), Message("assistant", speech.text))
        results.append(SceneConversation(work.name, ("", speech.speaker), messages))
    return results


def conversations_by_part(train_works: list[Work], validation_works: list[Work]) -> DialogueSplit:
    """Conversations from each part; the persons list comes from the training part
    (the top of the play), which the validation part's speakers share. Persona
    openings are for training only: held-out replies keep the plays' own prompts."""
    train, validation = [], []
    for train_part, held_out in zip(train_works, validation_works):
        people = persons(train_part.text)
        train += work_conversations(train_part, people) + persona_openings(train_part, people)
        validation += work_conversations(held_out, people)
    return DialogueSplit(train, validation)


def dialogue_split() -> DialogueSplit:
    split = builtin_split()
    return conversations_by_part(split.train, split.validation)


def count_summary(conversations: list[SceneConversation]) -> dict:
    turns = [sum(m.role == "assistant" for m in c.messages) for c in conversations]
    return {
        "conversations": len(conversations),
        "single_turn": sum(t == 1 for t in turns),
        "multi_turn": sum(t > 1 for t in turns),
        "assistant_replies": sum(turns),
        "with_persona": sum(c.messages[0].role == "system" for c in conversations),
        "works": len({c.work for c in conversations}),
    }
