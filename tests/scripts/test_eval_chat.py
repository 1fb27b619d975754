"""The persona measures of scripts/eval_chat.py, which the README's numbers come from."""

from __future__ import annotations

import sys

import pytest

from tests.helpers.paths import ROOT  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))

import eval_chat  # noqa: E402

from model.network.model_folder import load_model, load_tokenizer  # noqa: E402
from model.text.chat_format import Message  # noqa: E402
from model.training.dialogue import SceneConversation, dialogue_split  # noqa: E402
from model.training.finetune import reply_loss, reply_nats  # noqa: E402

BUILTIN = ROOT / "chatapp" / "builtin" / "shakespeare-base"


class Options:
    seed = 0
    device = "cpu"


def test_persona_name_joins_the_prompts_of_one_character():
    assert eval_chat.persona_name("You are Hamlet, Prince of Denmark.") == "Hamlet"
    assert eval_chat.persona_name("You are Hamlet.") == "Hamlet"
    assert eval_chat.persona_name("You are the Earl of Kent.") == "the Earl of Kent"


@pytest.mark.slow
def test_trials_put_the_own_persona_first_and_others_from_other_characters():
    tokenizer = load_tokenizer(BUILTIN)
    validation = dialogue_split().validation[:300]
    for plain_opener in (False, True):
        trials = eval_chat.persona_trials(Options, validation, tokenizer, 256, plain_opener)
        assert len(trials) > 50
        for trial in trials:
            own = (trial.reply.work, trial.reply.messages[0].content)
            assert trial.characters[0] == own and len(trial.characters) == eval_chat.PERSONA_CANDIDATES
            names = [(work, eval_chat.persona_name(prompt)) for work, prompt in trial.characters]
            assert len(set(names)) == len(names)  # no other prompt of the same character
            assert all(len(e) <= 257 for e in trial.examples)
            assert trial.headings[0] == trial.reply.speakers[-1] and len(trial.headings) == len(trial.characters)
            if plain_opener:
                assert trial.reply.messages[1] == Message("user", "Speak.")


def test_word_counts_pick_the_character_whose_words_a_reply_uses():
    tokenizer = load_tokenizer(BUILTIN)

    def said(persona: str, text: str) -> SceneConversation:
        return SceneConversation(
            "play", ("a", "b"), (Message("system", persona), Message("user", "Speak."), Message("assistant", text))
        )

    train = [said("You are Falstaff.", "sack and sugar, sweet Hal")] * 5 + [
        said("You are Juliet.", "Romeo, my love, good night")
    ] * 5
    trials = []
    for reply in (said("You are Falstaff.", "more sack, Hal"), said("You are Juliet.", "good night, Romeo")):
        other = "You are Juliet." if "Falstaff" in reply.messages[0].content else "You are Falstaff."
        trials.append(eval_chat.PersonaTrial(reply, [("play", reply.messages[0].content), ("play", other)], [], []))
    assert eval_chat.word_count_choice(trials, train, tokenizer)["own_most_likely"] == 2
    swapped = [eval_chat.PersonaTrial(t.reply, t.characters[::-1], [], []) for t in trials]
    assert eval_chat.word_count_choice(swapped, train, tokenizer)["own_most_likely"] == 0


@pytest.mark.slow
def test_each_replys_nats_add_up_to_the_mean_reply_loss(tiny_model_dir):
    model, tokenizer, _ = load_model(tiny_model_dir)
    trials = eval_chat.persona_trials(Options, dialogue_split().validation[:60], tokenizer, 256, False)
    examples = [e for t in trials for e in t.examples][:40]
    nats = reply_nats(model, examples, tokenizer.end_of_text_id, "cpu")
    mean = reply_loss(model, examples, tokenizer.end_of_text_id, "cpu")
    assert len(nats) == len(examples)
    assert abs(sum(nats) / mean["tokens"] - mean["loss"]) < 1e-4
    # padding does not leak: one example alone scores the same as in its batch
    alone = reply_nats(model, examples[3:4], tokenizer.end_of_text_id, "cpu")
    assert abs(alone[0] - nats[3]) < 1e-3
