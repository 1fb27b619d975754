"""A foreign chat template is rendered in a bounded sandbox: what would hang,
take gigabytes or run code is a one-line TemplateError, quickly."""

from __future__ import annotations

import time

import pytest

from model.text.chat_template import TemplateError, render_template

HOSTILE = {
    "nested loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "took more than 1 s",
    ),
    "string times a huge number": ("{{ 'x' * 3000000000 }}", "too big"),
    "a huge padding": ("{{ 'x'.ljust(3000000000) }}", "too big"),
    "a huge filter width": ("{{ 'x' | center(3000000000) }}", "too big"),
    "a huge power": ("{{ 10 ** 10000000 }}", "too big"),
    "output that grows without end": ("{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}", "too big"),
    "a huge format width": ("{{ '%3000000000s' % 'x' }}", "too big"),
    "code execution": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "failed"),
    "a syntax error": ("{% for %}", "does not compile"),
    "the template's own refusal": ("{{ raise_exception('System role not supported') }}", "refused the conversation"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_template_is_a_one_line_error(name):
    source, expected = HOSTILE[name]
    started = time.monotonic()
    with pytest.raises(TemplateError) as error:
        render_template(source, bounded_memory=True, messages=[])
    assert expected in str(error.value) and "\n" not in str(error.value)
    assert time.monotonic() - started < 5


def test_an_ordinary_template_renders_and_the_limits_are_lifted_after():
    import resource

    before = resource.getrlimit(resource.RLIMIT_AS)
    text = render_template(
        "{% for m in messages %}[{{ m.role }}] {{ m.content | trim }}\n{% endfor %}",
        bounded_memory=True,
        messages=[{"role": "user", "content": "  hi  "}],
    )
    assert text == "[user] hi\n"
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert len(bytearray(400_000_000)) == 400_000_000  # memory past the template's cap is allowed again
