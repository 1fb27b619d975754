"""Measure a chat model against the bars of issue 6, on held-out dialogue.

    python scripts/eval_chat.py bars --base BASE --chat CHAT [--prompts 200] [--json FILE]
    python scripts/eval_chat.py compare RUN_FOLDER...   (LoRA vs full fine-tuning)
    python scripts/eval_chat.py speakers --base BASE
    python scripts/eval_chat.py persona --chat CHAT [--base BASE]

bars:
  1. loss on the held-out replies (the validation part of every play, as
     `chatapp finetune` reports it), chat model vs base model on the same
     tokens; and on single-turn replies, the base model also in its own play
     layout ("SPEAKER.\\ntext") on the very same reply tokens, its fairest chance;
  2. stopping: of N held-out prompts, how many replies end with <|end|> within
     200 tokens (sampling as the app does: temperature 0.8, top-p 0.95, seed i);
  3. persona: loss of held-out replies under their own persona prompt vs a
     persona taken from another conversation; how often a reply is most likely
     under its own persona among 5; and sample replies with fixed seeds.
compare: a table of method, trainable parameters, time and validation loss of
`chatapp finetune` output folders.
speakers: how much a base model's loss on held-out single-turn replies depends
on the speaker heading in the plays' own layout ("HAMLET.\n"), the right one vs
another character's: the voice knowledge a persona prompt could draw on.
persona: the persona measures alone, for one chat model.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.inference.sampling import SamplingParams  # noqa: E402
from model.network.model_folder import load_model, read_config  # noqa: E402
from model.text.chat_format import Message, fit_to_context  # noqa: E402
from model.training.dialogue import SceneConversation, dialogue_split  # noqa: E402
from model.training.finetune import reply_loss, reply_nats  # noqa: E402
from model.training.finetune_data import Example, encode_all, fit_example  # noqa: E402

MAX_REPLY_TOKENS = 192  # as `chatapp finetune` keeps its data
STOP_BUDGET = 200
PERSONA_EXAMPLES = [
    ("You are Hamlet, Prince of Denmark.", "How do you like the court, my lord?"),
    ("You are Juliet, daughter to Capulet.", "Who is the young man below your window?"),
    ("You are Sir John Falstaff.", "Where were you last night, Jack?"),
    ("You are Lady Macbeth.", "The king sleeps in our house tonight."),
    ("You are Iago.", "Do you trust the Moor?"),
    ("You are Prospero, the right Duke of Milan.", "What is this island?"),
    (None, "Good morrow, sir. What news?"),
]
PERSONA_SEEDS = (0, 1, 2)
PERSONA_CANDIDATES = 5


def play_layout_examples(conversations, tokenizer, context_length: int) -> tuple[list[Example], list[Example]]:
    """Single-turn replies twice: in the chat format (reply text only counted),
    and in the plays' own layout, counting the very same reply tokens."""
    chat, play = [], []
    for c in conversations:
        if len(c.speakers) != 2:
            continue
        user, reply = c.messages[-2].content, c.messages[-1].content
        fitted = fit_example(list(c.messages), tokenizer, context_length + 1, MAX_REPLY_TOKENS)
        reply_ids = tokenizer.encode(reply)
        prefix = [tokenizer.end_of_text_id] + tokenizer.encode(f"{c.speakers[0]}.\n{user}\n\n{c.speakers[1]}.\n")
        if fitted is None or len(prefix) + len(reply_ids) > context_length + 1:
            continue
        text_only = [m if t != tokenizer.end_of_turn_id else 0 for t, m in zip(fitted.ids, fitted.mask)]
        chat.append(Example(fitted.ids, text_only))
        play.append(Example(prefix + reply_ids, [0] * len(prefix) + [1] * len(reply_ids)))
    return chat, play


def losses(args, validation, tokenizer, models) -> dict:
    context = models["chat"].config.context_length
    examples, _ = encode_all([c.messages for c in validation], tokenizer, context + 1, MAX_REPLY_TOKENS)
    chat_text_only, play = play_layout_examples(validation, tokenizer, context)
    pad = tokenizer.end_of_text_id
    result = {}
    for name, model in models.items():
        result[name] = {
            "all_replies_with_end": reply_loss(model, examples, pad, args.device),
            "single_turn_reply_text": reply_loss(model, chat_text_only, pad, args.device),
        }
    result["base"]["single_turn_reply_text_in_play_layout"] = reply_loss(models["base"], play, pad, args.device)
    return result


def persona_loss(args, validation, tokenizer, model) -> dict:
    """Held-out replies under their own persona vs another character's."""
    with_persona = [c for c in validation if c.messages[0].role == "system"]
    shuffled = random.Random(args.seed).sample(with_persona, len(with_persona))
    own, swapped = [], []
    for c, other in zip(with_persona, shuffled[1:] + shuffled[:1]):
        if other.messages[0].content == c.messages[0].content:
            continue
        own.append(list(c.messages))
        swapped.append([other.messages[0]] + list(c.messages[1:]))
    context = model.config.context_length
    pairs = [
        (
            fit_example(a, tokenizer, context + 1, MAX_REPLY_TOKENS),
            fit_example(b, tokenizer, context + 1, MAX_REPLY_TOKENS),
        )
        for a, b in zip(own, swapped)
    ]
    pairs = [p for p in pairs if p[0] is not None and p[1] is not None]
    pad = tokenizer.end_of_text_id
    return {
        "own_persona": reply_loss(model, [p[0] for p in pairs], pad, args.device),
        "other_persona": reply_loss(model, [p[1] for p in pairs], pad, args.device),
    }


def persona_name(persona: str) -> str:
    """ "You are Hamlet, Prince of Denmark." -> "Hamlet", as for "You are Hamlet."."""
    return persona.removeprefix("You are ").split(",")[0].rstrip(".")


@dataclass
class PersonaTrial:
    """One held-out reply and the characters it is scored under, its own first."""

    reply: SceneConversation
    characters: list[tuple[str, str]]  # (work, persona prompt)
    headings: list[str]  # each character's name as the play prints it over a speech
    examples: list[Example]


def persona_trials(args, validation, tokenizer, context_length: int, plain_opener: bool) -> list[PersonaTrial]:
    """Each held-out reply with a persona, under its own and PERSONA_CANDIDATES-1
    other characters' personas (two Helenas of two plays are two characters).
    plain_opener: single-turn replies after "Speak." instead of the play's
    message, so that only the persona tells who speaks."""
    with_persona = [c for c in validation if c.messages[0].role == "system"]
    if plain_opener:
        with_persona = [
            SceneConversation(c.work, c.speakers, (c.messages[0], Message("user", "Speak."), c.messages[-1]))
            for c in with_persona
            if len(c.speakers) == 2
        ]
    prompts: dict[tuple[str, str], str] = {}  # one prompt per character, the longest
    headings: dict[tuple[str, str], str] = {}
    for c in with_persona:
        key = (c.work, persona_name(c.messages[0].content))
        prompts[key] = max(prompts.get(key, ""), c.messages[0].content, key=len)
        headings.setdefault(key, c.speakers[-1])
    characters = sorted(prompts)
    chooser = random.Random(args.seed)
    trials = []
    for c in with_persona:
        own = (c.work, persona_name(c.messages[0].content))
        others = chooser.sample([k for k in characters if k != own], PERSONA_CANDIDATES - 1)
        chosen = [(c.work, c.messages[0].content)] + [(work, prompts[(work, name)]) for work, name in others]
        examples = [
            fit_example(
                [Message("system", prompt)] + list(c.messages[1:]), tokenizer, context_length + 1, MAX_REPLY_TOKENS
            )
            for _, prompt in chosen
        ]
        if all(e is not None for e in examples):
            trials.append(PersonaTrial(c, chosen, [c.speakers[-1]] + [headings[k] for k in others], examples))
    return trials


def choice_report(trials: list[PersonaTrial], nats: list[float]) -> dict:
    """nats: each trial's characters in turn, its own first."""
    own_best, start = 0, 0
    for t in trials:
        scores = nats[start : start + len(t.characters)]
        own_best += min(range(len(scores)), key=scores.__getitem__) == 0
        start += len(t.characters)
    return {
        "replies": len(trials),
        "candidates": PERSONA_CANDIDATES,
        "own_most_likely": own_best,
        "percent": 100 * own_best / max(len(trials), 1),
        "chance_percent": 100 / PERSONA_CANDIDATES,
    }


def persona_choice(args, trials: list[PersonaTrial], tokenizer, model) -> dict:
    """Does the persona carry the character's voice? The share of held-out
    replies that the model finds most likely under their own persona."""
    return choice_report(
        trials, reply_nats(model, [e for t in trials for e in t.examples], tokenizer.end_of_text_id, args.device)
    )


def heading_choice(args, trials: list[PersonaTrial], tokenizer, base_model) -> dict:
    """The same test for a base model in the plays' own layout, the reply under
    each character's speaker heading alone ("HAMLET.\n"): the voice knowledge
    that fine-tuning starts from."""
    examples = []
    for t in trials:
        reply = tokenizer.encode(t.reply.messages[-1].content)
        for heading in t.headings:
            prefix = [tokenizer.end_of_text_id] + tokenizer.encode(f"{heading}.\n")
            examples.append(Example(prefix + reply, [0] * len(prefix) + [1] * len(reply)))
    return choice_report(trials, reply_nats(base_model, examples, tokenizer.end_of_text_id, args.device))


def word_count_choice(trials: list[PersonaTrial], train, tokenizer, mix: float = 0.2) -> dict:
    """The same test for a model that knows nothing but how often each character
    says each token in the training part (mixed with the overall counts): how
    much the voices differ in their words alone, a reference for persona_choice."""
    overall, by_character = Counter(), defaultdict(Counter)
    for c in train:
        ids = tokenizer.encode(c.messages[-1].content)
        overall.update(ids)
        if c.messages[0].role == "system":
            by_character[(c.work, persona_name(c.messages[0].content))].update(ids)
    total, vocab = sum(overall.values()), tokenizer.vocab_size

    def nats(character: tuple[str, str], ids: list[int]) -> float:
        counts = by_character.get((character[0], persona_name(character[1])), Counter())
        size = max(sum(counts.values()), 1)
        return sum(
            -math.log(mix * counts[i] / size + (1 - mix) * (overall[i] + 0.5) / (total + 0.5 * vocab)) for i in ids
        )

    scores = []
    for t in trials:
        ids = tokenizer.encode(t.reply.messages[-1].content)
        scores += [nats(character, ids) for character in t.characters]
    return choice_report(trials, scores)


def speaker_gap(args) -> dict:
    model, tokenizer, _ = load_model(args.base, args.device)
    validation = [c for c in dialogue_split().validation if len(c.speakers) == 2]
    shuffled = random.Random(args.seed).sample(validation, len(validation))
    right, wrong = [], []
    for c, other in zip(validation, shuffled[1:] + shuffled[:1]):
        if other.speakers[1] == c.speakers[1]:
            continue
        user, reply_ids = c.messages[-2].content, tokenizer.encode(c.messages[-1].content)
        pair = []
        for speaker in (c.speakers[1], other.speakers[1]):
            prefix = [tokenizer.end_of_text_id] + tokenizer.encode(f"{c.speakers[0]}.\n{user}\n\n{speaker}.\n")
            pair.append(Example(prefix + reply_ids, [0] * len(prefix) + [1] * len(reply_ids)))
        if max(len(e.ids) for e in pair) <= model.config.context_length + 1:
            right.append(pair[0])
            wrong.append(pair[1])
    pad = tokenizer.end_of_text_id
    return {
        "right_speaker": reply_loss(model, right, pad, args.device),
        "wrong_speaker": reply_loss(model, wrong, pad, args.device),
    }


def stop_rate(engine, prompts: list[list[Message]], seed: int) -> dict:
    """Replies that end with <|end|> within STOP_BUDGET tokens (prompts cut from
    the front to leave that room, as the app does)."""
    stopped, lengths = 0, []
    end = engine.tokenizer.end_of_turn_id
    for index, messages in enumerate(prompts):
        fitted = fit_to_context(messages, engine.tokenizer, engine.context_length, STOP_BUDGET)
        params = SamplingParams(max_tokens=STOP_BUDGET, seed=seed + index)
        finished = list(engine.generate_ids(fitted.ids, params, {end}, use_cache=True))[-1]
        stopped += finished.reason == "stop"
        lengths.append(finished.completion_tokens)
    lengths.sort()
    return {
        "prompts": len(prompts),
        "ended_with_end": stopped,
        "percent": 100 * stopped / len(prompts),
        "median_reply_tokens": lengths[len(lengths) // 2],
    }


def persona_samples(engine) -> list[dict]:
    samples = []
    for system, user in PERSONA_EXAMPLES:
        messages = ([Message("system", system)] if system else []) + [Message("user", user)]
        for seed in PERSONA_SEEDS:
            events = list(engine.chat(messages, SamplingParams(max_tokens=120, seed=seed)))
            text = "".join(e.text for e in events[:-1])
            samples.append({"system": system, "user": user, "seed": seed, "reply": text, "finish": events[-1].reason})
    return samples


def command_bars(args) -> dict:
    from model.inference.torch_engine import TorchEngine

    split = dialogue_split()
    loaded = {"chat": load_model(args.chat, args.device), "base": load_model(args.base, args.device)}
    models = {name: model for name, (model, _, _) in loaded.items()}
    tokenizer = loaded["chat"][1]
    report = {"chat": str(args.chat), "base": str(args.base), "loss": losses(args, split.validation, tokenizer, models)}
    report["persona_loss"] = {name: persona_loss(args, split.validation, tokenizer, m) for name, m in models.items()}
    report["persona_choice"] = persona_choices(args, split, tokenizer, models)
    engines = {name: TorchEngine(model, tok, config, args.device) for name, (model, tok, config) in loaded.items()}
    prompts = [list(c.messages[:-1]) for c in random.Random(args.seed).sample(split.validation, args.prompts)]
    report["stop"] = {name: stop_rate(engine, prompts, args.seed) for name, engine in engines.items()}
    report["persona_samples"] = persona_samples(engines["chat"])
    return report


def persona_choices(args, split, tokenizer, models: dict) -> dict:
    """persona_choice for each model, after the play's message and after a plain
    "Speak."; with the references: word counts, and the base model under
    speaker headings (after "Speak.", the same replies and characters)."""
    context = min(m.config.context_length for m in models.values())
    report = {}
    for setting, plain_opener in (("after_message", False), ("after_plain_opener", True)):
        trials = persona_trials(args, split.validation, tokenizer, context, plain_opener)
        report[setting] = {name: persona_choice(args, trials, tokenizer, m) for name, m in models.items()}
        report[setting]["word_counts"] = word_count_choice(trials, split.train, tokenizer)
        if plain_opener and "base" in models:
            report[setting]["base_under_speaker_heading"] = heading_choice(args, trials, tokenizer, models["base"])
    return report


def print_persona_choices(choices: dict) -> None:
    for setting, results in choices.items():
        print(
            f"held-out replies most likely under their own persona of {PERSONA_CANDIDATES} "
            f"({'after the play’s message' if setting == 'after_message' else 'after “Speak.”'}):"
        )
        for name, choice in results.items():
            print(
                f"  {name}: {choice['own_most_likely']}/{choice['replies']} ({choice['percent']:.1f}%, "
                f"chance {choice['chance_percent']:.0f}%)"
            )


def print_bars(report: dict) -> None:
    loss = report["loss"]
    print(
        f"held-out reply loss (nats/token, {loss['chat']['all_replies_with_end']['tokens']:,} tokens, "
        "replies and <|end|>):"
    )
    print(
        f"  chat {loss['chat']['all_replies_with_end']['loss']:.4f}   "
        f"base {loss['base']['all_replies_with_end']['loss']:.4f}"
    )
    print(f"single-turn reply text only ({loss['chat']['single_turn_reply_text']['tokens']:,} tokens):")
    print(
        f"  chat {loss['chat']['single_turn_reply_text']['loss']:.4f}   base in the chat format "
        f"{loss['base']['single_turn_reply_text']['loss']:.4f}   base in the plays' layout "
        f"{loss['base']['single_turn_reply_text_in_play_layout']['loss']:.4f}"
    )
    for name, stop in report["stop"].items():
        print(
            f"{name}: {stop['ended_with_end']}/{stop['prompts']} replies ({stop['percent']:.1f}%) end with <|end|> "
            f"within {STOP_BUDGET} tokens; median reply {stop['median_reply_tokens']} tokens"
        )
    for name, persona in report["persona_loss"].items():
        print(
            f"{name}: held-out replies under their own persona {persona['own_persona']['loss']:.4f}, "
            f"under another's {persona['other_persona']['loss']:.4f} ({persona['own_persona']['examples']} replies)"
        )
    print_persona_choices(report["persona_choice"])
    print("\npersona samples (seeds " + ", ".join(map(str, PERSONA_SEEDS)) + ", every one shown):")
    for s in report["persona_samples"]:
        print(
            f"\n[system] {s['system'] or '(none)'}\n[user] {s['user']}\n[seed {s['seed']}, {s['finish']}] {s['reply']}"
        )


def command_compare(args) -> list[dict]:
    rows = []
    for folder in args.runs:
        folder = Path(folder)
        summary = (
            json.loads((folder / "finetune.json").read_text())
            if (folder / "finetune.json").is_file()
            else read_config(folder)["training"]
        )
        rows.append(
            {
                "run": folder.name,
                "method": summary["method"],
                "trainable_parameters": summary["trainable_parameters"],
                "trainable_fraction": summary["trainable_fraction"],
                "steps": summary["step"],
                "time_s": summary["elapsed_s"],
                "validation_loss": (summary.get("validation") or {}).get("loss"),
            }
        )
    print(f"{'run':24s} {'method':6s} {'trainable':>12s} {'fraction':>9s} {'steps':>6s} {'time':>8s} {'val loss':>9s}")
    for r in rows:
        loss = f"{r['validation_loss']:.4f}" if r["validation_loss"] is not None else "-"
        print(
            f"{r['run']:24s} {r['method']:6s} {r['trainable_parameters']:>12,} {100 * r['trainable_fraction']:>8.2f}% "
            f"{r['steps']:>6d} {r['time_s']:>7.0f}s {loss:>9s}"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    bars = commands.add_parser("bars", help="loss, stopping and persona on held-out dialogue")
    bars.add_argument("--base", required=True, help="the base model folder")
    bars.add_argument("--chat", required=True, help="the fine-tuned model folder")
    bars.add_argument("--prompts", type=int, default=200)
    bars.add_argument("--seed", type=int, default=0)
    bars.add_argument("--device", default="cpu")
    bars.add_argument("--json", default=None, help="also write the report here")
    compare = commands.add_parser("compare", help="LoRA vs full fine-tuning: a table of finetune output folders")
    compare.add_argument("runs", nargs="+")
    persona = commands.add_parser("persona", help="the persona measures alone, for one fine-tuned model")
    persona.add_argument("--chat", required=True)
    persona.add_argument("--base", default=None, help="also the base model, and under speaker headings")
    persona.add_argument("--seed", type=int, default=0)
    persona.add_argument("--device", default="cpu")
    speakers = commands.add_parser("speakers", help="a base model's loss under the right vs a wrong speaker heading")
    speakers.add_argument("--base", required=True)
    speakers.add_argument("--seed", type=int, default=0)
    speakers.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.command == "compare":
        command_compare(args)
        return 0
    if args.command == "persona":
        model, tokenizer, _ = load_model(args.chat, args.device)
        models = {"chat": model} | ({"base": load_model(args.base, args.device)[0]} if args.base else {})
        split = dialogue_split()
        own_other = persona_loss(args, split.validation, tokenizer, model)
        print(
            f"own persona {own_other['own_persona']['loss']:.4f}, "
            f"another's {own_other['other_persona']['loss']:.4f} nats/token"
        )
        print_persona_choices(persona_choices(args, split, tokenizer, models))
        return 0
    if args.command == "speakers":
        gap = speaker_gap(args)
        print(
            f"{gap['right_speaker']['examples']:,} single-turn held-out replies "
            f"({gap['right_speaker']['tokens']:,} tokens): "
            f"right speaker {gap['right_speaker']['loss']:.4f}, "
            f"wrong speaker {gap['wrong_speaker']['loss']:.4f} nats/token"
        )
        return 0
    report = command_bars(args)
    print_bars(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
