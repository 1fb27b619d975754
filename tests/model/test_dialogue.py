"""Dialogue from the plays: speeches, scenes, personas, and the held-out split."""

import pytest

from model.training.corpus import Work, builtin_split
from model.training.dialogue import (
    PLAIN_OPENERS,
    count_summary,
    dialogue_split,
    find_person,
    paragraphs,
    persona_openings,
    persona_prompt,
    persons,
    scenes,
    work_conversations,
)

PLAY = """HAMLET, PRINCE OF DENMARK

by William Shakespeare



PERSONS REPRESENTED.

Claudius, King of Denmark.
Hamlet, Son to the former, and Nephew to the present King.
Horatio, Friend to Hamlet.
Ghost of Hamlet's Father.
Earl of Kent.

Lords, Ladies, Officers.

SCENE. Elsinore.



ACT I.

Scene I. Elsinore. A platform before the Castle.

[Enter Horatio and Hamlet,
meeting.]

Hor.
Hail to your lordship!

Ham.
I am glad to see you well:
Horatio,--or I do forget myself.

[Enter King.]

And what make you from Wittenberg?

Hor.
A truant disposition, good my lord. [Aside.] Alas!

Ham.
I would not hear your enemy say so.

[Exit King.]

Go to.
I will not.

Hor.
My lord, I came to see your father's funeral.

Ham.
I pray thee, do not mock me, fellow-student.

King.
How fares our cousin Hamlet?


Scene II. Another part of the platform.

Ham.
Farewell.

Hor.
Farewell.

THESEUS
                    Go, Philostrate,
Stir up the Athenian youth.
"""


def test_speeches_and_scenes():
    found = scenes(PLAY)
    assert [len(scene) for scene in found] == [7, 3]
    first, second = found[0][0], found[0][1]
    assert (first.speaker, first.text) == ("Hor", "Hail to your lordship!")
    # the stage direction is cut out; the speech carries on after it
    assert (
        second.text
        == "I am glad to see you well:\nHoratio,--or I do forget myself.\nAnd what make you from Wittenberg?"
    )
    assert found[0][2].text == "A truant disposition, good my lord. Alas!"
    # "Go to." after a stage direction is verse: it is neither in capitals, nor
    # recurring, nor in the list of persons; "King." speaks once but is in the list
    assert found[0][3].text == "I would not hear your enemy say so.\nGo to.\nI will not."
    assert found[0][-1].speaker == "King"
    assert [s.speaker for s in found[1]] == ["Ham", "Hor", "THESEUS"]  # capitals, no period
    assert found[1][2].text == "Go, Philostrate,\nStir up the Athenian youth."


def test_personas_from_the_persons_list():
    people = persons(PLAY)
    assert ("Horatio", "Friend to Hamlet") in people
    assert persona_prompt("Ham", people) == "You are Hamlet, Prince of Denmark."  # described by the title
    assert persona_prompt("Hor", people) == "You are Horatio, friend to Hamlet."
    assert persona_prompt("King", people) == "You are Claudius, King of Denmark."
    assert persona_prompt("Kent", people) == "You are the Earl of Kent."
    assert persona_prompt("Hor", people, with_description=False) == "You are Horatio."
    assert find_person("Lords", people) is None
    assert persona_prompt("Messenger", people) is None


def test_conversations_pairs_and_windows():
    conversations = work_conversations(Work("hamlet", PLAY))
    pairs = [c for c in conversations if len(c.speakers) == 2]
    windows = [c for c in conversations if len(c.speakers) > 2]
    assert len(pairs) == 6 + 2  # consecutive speeches by different speakers, within each scene
    assert ("Hor", "Ham") in [c.speakers for c in pairs]
    assert [c.speakers for c in windows] == [("Hor", "Ham", "Hor", "Ham", "Hor", "Ham")]
    window = windows[0]
    roles = [m.role for m in window.messages if m.role != "system"]
    assert roles == ["user", "assistant"] * 3
    for c in conversations:
        assert c.messages[-1].role == "assistant"
        system = [m for m in c.messages if m.role == "system"]
        assert not system or system[0].content.startswith("You are ")


def test_persona_openings_answer_a_plain_opener_in_character():
    play = builtin_split().train[[w.name for w in builtin_split().train].index("hamlet_gut")]
    people = persons(play.text)
    openings = persona_openings(play, people)
    speeches = [s for scene in scenes(play.text, people) for s in scene]
    with_persona = [s for s in speeches if persona_prompt(s.speaker, people)]
    assert len(with_persona) / 5 < len(openings) < len(with_persona) / 2  # about one in three
    for c in openings:
        system, user, reply = c.messages
        assert (system.role, user.role, reply.role) == ("system", "user", "assistant")
        assert user.content in PLAIN_OPENERS
        assert system.content in (persona_prompt(c.speakers[1], people), persona_prompt(c.speakers[1], people, False))
        assert any(s.speaker == c.speakers[1] and s.text == reply.content for s in speeches)
    assert {c.messages[1].content for c in openings} == set(PLAIN_OPENERS)
    assert "You are Hamlet, Prince of Denmark." in {c.messages[0].content for c in openings}


@pytest.mark.slow
def test_the_held_out_part_stays_held_out():
    split = dialogue_split()
    counts_train, counts_validation = count_summary(split.train), count_summary(split.validation)
    assert counts_train["conversations"] > 25_000 and counts_validation["conversations"] > 1_000
    assert counts_train["works"] == counts_validation["works"] == 37  # the 5 poems have no dialogue
    assert counts_train["multi_turn"] > 0 and counts_train["with_persona"] > counts_train["conversations"] / 2
    assert not any(c.messages[1].content in PLAIN_OPENERS and c.speakers[0] == "" for c in split.validation)
    assert sum(c.speakers[0] == "" for c in split.train) > 5_000  # persona openings: training only
    parts = builtin_split()

    def flat(text: str) -> str:  # whitespace and stage directions as the speeches are cleaned
        return " ".join(" ".join(line for group in paragraphs(text) for line in group).split())

    train_text = {w.name: flat(w.text) for w in parts.train}
    held_out_text = {w.name: flat(w.text) for w in parts.validation}
    for conversation in split.validation[::25]:
        reply = flat(conversation.messages[-1].content)
        assert reply in held_out_text[conversation.work]
        assert len(reply) < 40 or reply not in train_text[conversation.work]  # "Ay." is everywhere
    for conversation in split.train[::500]:
        assert flat(conversation.messages[-1].content) in train_text[conversation.work]


@pytest.mark.parametrize(
    "work, speaker, prompt",
    [
        ("hamlet_gut", "Ham", "You are Hamlet, Prince of Denmark."),
        ("lear_gut", "Lear", "You are Lear, King of Britain."),
        ("macbeth_gut", "LADY MACBETH", "You are Lady Macbeth."),
        ("othello_gut", "IAGO", "You are Iago."),
        ("antony_and_cleopatra_gut", "CLEOPATRA", "You are Cleopatra, Queen of Egypt."),
    ],
)
def test_personas_in_the_corpus(work, speaker, prompt):
    text = {w.name: w.text for w in builtin_split().train}[work]
    assert persona_prompt(speaker, persons(text)) == prompt
