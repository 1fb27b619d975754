"""Text that trips tokenizers: emoji sequences, our special tokens' lookalikes,
every kind of whitespace, random code points, and the corpus itself."""

from __future__ import annotations

import random
import unicodedata

from tests.helpers.paths import ROOT

EMOJI = [
    "😀",
    "🎭",
    "👍🏽",
    "👨‍👩‍👧‍👦",
    "🏳️‍🌈",
    "🇬🇧",
    "🇯🇵",
    "❤️",
    "🤖",
    "🧑🏿‍💻",
    "☕",
    "✨",
    "🫠",
    "🐍",
    "👁‍🗨",
    "©️",
    "1️⃣",
    "🙂‍↔️",
]
LOOKALIKES = [
    "<|endoftext|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<|END|>",
    "< |end| >",
    "<|end",
    "end|>",
    "<||>",
    "<|>",
    "|>",
    "<|",
    "<|end|><|end|>",
    "<|user|>hi<|end|>",
    "<|im_start|>",
    "<s>",
    "</s>",
    "[INST]",
    "<<SYS>>",
]
WHITESPACE = [
    " ",
    "  ",
    "\t",
    "\n",
    "\n\n",
    "\r\n",
    "\x0b",
    "\x0c",
    "\xa0",
    "\u2028",
    "\u3000",
    "\u200b",
    " \n ",
    "   \n\n  ",
]


def random_unicode(rng: random.Random) -> str:
    chars = []
    for _ in range(rng.randint(1, 24)):
        plane = rng.random()
        if plane < 0.5:
            cp = rng.randint(0x20, 0x2FFF)
        elif plane < 0.8:
            cp = rng.randint(0x3000, 0xFFFD)
        else:
            cp = rng.randint(0x10000, 0x10FFFF)
        if 0xD800 <= cp <= 0xDFFF:  # lone surrogates are not text (our tokenizer makes them U+FFFD)
            cp = 0xFFFD
        chars.append(chr(cp))
    return "".join(chars)


def sample_strings() -> list[str]:
    from model.training.corpus import builtin_works

    rng = random.Random(20261128)
    strings: list[str] = []
    lines = [line for work in builtin_works() for line in work.text.splitlines()]
    strings += lines[:: max(1, len(lines) // 1800)][:1800]  # corpus lines from every work
    text = builtin_works()[3].text
    for _ in range(300):  # multi-line chunks: runs of newlines and indentation
        start = rng.randrange(len(text) - 400)
        strings.append(text[start : start + rng.randint(20, 400)])
    code_lines = []
    for path in sorted((ROOT / "model").rglob("*.py")) + sorted((ROOT / "quant").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        code_lines += source.splitlines()
        strings.append(source[:3000])
    strings += [line for line in code_lines if line.strip()][:900]
    for _ in range(300):
        strings.append("".join(rng.choice(EMOJI + [" ", "a", "!"]) for _ in range(rng.randint(1, 10))))
    for _ in range(300):
        cjk = "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(rng.randint(1, 12)))
        kana = "".join(chr(rng.randint(0x3041, 0x30FF)) for _ in range(rng.randint(0, 6)))
        hangul = "".join(chr(rng.randint(0xAC00, 0xD7A3)) for _ in range(rng.randint(0, 6)))
        strings.append(
            rng.choice(["", "Hello ", "「"]) + cjk + rng.choice(["。", "、", " ", "！", "?"]) + kana + hangul
        )
    for _ in range(300):
        word = "".join(
            rng.choice("aeiouxyzAEnc") + "".join(chr(rng.randint(0x300, 0x36F)) for _ in range(rng.randint(0, 3)))
            for _ in range(rng.randint(1, 8))
        )
        strings.append(
            word
            + " "
            + unicodedata.normalize("NFD", rng.choice(["café", "naïve", "Ångström", "über", "Dvořák", "ﬁne"]))
        )
    for _ in range(1100):
        strings.append(random_unicode(rng))
    for _ in range(300):
        parts = [
            rng.choice(LOOKALIKES + WHITESPACE + ["word", "I'm", "don't", "'ll", "'VE", "123", "4567890", "x=1;"])
            for _ in range(rng.randint(1, 6))
        ]
        strings.append("".join(parts))
    strings += (
        LOOKALIKES + WHITESPACE + ["", "a", "\x00", "\x00\x01\x7f", "'s'S'''", "1234567890" * 5, "a" * 500, " " * 100]
    )
    return strings
