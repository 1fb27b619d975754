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
    # the loops inside filters (Jinja's, not the template's code) are stopped too
    "long filter loops": (
        "{% for i in range(100000) %}{{ range(100000) | select('odd') | map('string') | unique | list | length }}"
        "{% endfor %}",
        "took more than 1 s",
    ),
    "a macro that calls itself in a loop": (
        "{% macro f(n) %}{% for i in range(100000) %}{{ f(n + 1) if n < 3 else '' }}{% endfor %}{% endmacro %}"
        "{{ f(0) }}",
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


def test_compiling_a_huge_template_is_refused_before_it_takes_memory():
    """A 2.3 MB template once took 1.4 GB to compile: past MAX_TEMPLATE_SOURCE_CHARS it is refused."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(TemplateError) as error:
        render_template("{{ a }}" * 330_000, bounded_memory=True, messages=[])
    assert "too big to compile" in str(error.value) and "\n" not in str(error.value)
    assert time.monotonic() - started < 1
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) < 50_000  # KiB: nothing much was taken


def test_the_largest_template_allowed_compiles_and_renders():
    """Compiling is bounded by the source's size (no time limit: see compile_template)."""
    text = render_template("{{ a }}" * 28_400, bounded_memory=True, messages=[], a="x")
    assert text == "x" * 28_400


HF_EXTENSIONS = {
    "generation": ("{% generation %}[{{ 'x' }}]{% endgeneration %}", {}, "[x]"),
    "tojson's arguments": (
        "{{ {'b': 1, 'a': 'é'} | tojson(indent=2, sort_keys=True) }}|{{ [1, 2] | tojson(separators=(',', ':')) }}"
        "|{{ 'é' | tojson(ensure_ascii=True) }}|{{ '<&>' | tojson }}",
        {},
        '{\n  "a": "é",\n  "b": 1\n}|[1,2]|"\\u00e9"|"<&>"',
    ),
    "strftime_now": ("{{ strftime_now('%Y') }}", {}, time.strftime("%Y")),
    "tools and documents as none": (
        "{{ tools is none }} {{ documents is none }}",
        {"tools": None, "documents": None},
        "True True",
    ),
    "keyword flags": (
        "{{ enable_thinking }} {{ reasoning_effort }}",
        {"enable_thinking": False, "reasoning_effort": "low"},
        "False low",
    ),
    "namespace and dict": (
        "{% set ns = namespace(n=1) %}{% set ns.n = ns.n + 1 %}{{ ns.n }}{{ dict(a=1).a }}",
        {},
        "21",
    ),
}


@pytest.mark.parametrize("name", list(HF_EXTENSIONS))
def test_hugging_faces_template_extensions_work(name):
    source, variables, expected = HF_EXTENSIONS[name]
    assert render_template(source, **variables) == expected


def test_a_namespace_refuses_underscore_attributes():
    with pytest.raises(TemplateError):
        render_template("{% set ns = namespace(_x=1) %}{{ ns._x }}")
