"""The subset of Go's text/template that an Ollama chat TEMPLATE uses, to render
ours without Ollama: text, {{ .Field }}, {{ range .Messages }}, {{ if eq .Role
"x" }} / {{ else if ... }} / {{ else }} / {{ end }}, and the {{- -}} trims."""

from __future__ import annotations

import re

ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def tokenize(template: str) -> list[tuple[str, str]]:
    """[("text", s) | ("action", s)], with the trims applied to the text beside them."""
    parts: list[tuple[str, str]] = []
    at = 0
    for match in ACTION.finditer(template):
        text = template[at : match.start()]
        if match.group(1):
            text = text.rstrip()
        parts.append(("text", text))
        parts.append(("action", match.group(2)))
        at = match.end()
        if match.group(3):
            rest = template[at:]
            at += len(rest) - len(rest.lstrip())
    parts.append(("text", template[at:]))
    return [p for p in parts if p != ("text", "")]


def parse(parts: list[tuple[str, str]], at: int = 0, stop=("end",)):
    """A node list up to one of `stop`; returns (nodes, index of the stopping action)."""
    nodes = []
    while at < len(parts):
        kind, value = parts[at]
        if kind == "action" and (value in stop or value.split(" ")[0] in stop):
            return nodes, at
        if kind == "text":
            nodes.append(("text", value))
        elif value.startswith("range "):
            body, at = parse(parts, at + 1)
            nodes.append(("range", value[len("range ") :], body))
        elif value.startswith("if "):
            branches, at = [], at
            condition = value[len("if ") :]
            while True:
                body, at = parse(parts, at + 1, stop=("end", "else"))
                branches.append((condition, body))
                closing = parts[at][1]
                if closing == "end":
                    break
                condition = closing[len("else if ") :] if closing.startswith("else if ") else None
            nodes.append(("if", branches))
        else:
            nodes.append(("field", value))
        at += 1
    return nodes, at


def lookup(path: str, scope: dict):
    value = scope
    for name in path.lstrip(".").split("."):
        value = value[name]
    return value


def truth(condition: str | None, scope: dict) -> bool:
    if condition is None:
        return True
    match = re.fullmatch(r'eq (\.\w+) "(.*)"', condition)
    if match:
        return lookup(match.group(1), scope) == match.group(2)
    return bool(lookup(condition, scope))


def run(nodes, scope: dict) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "field":
            out.append(str(lookup(node[1], scope)))
        elif node[0] == "range":
            for item in lookup(node[1], scope):
                out.append(run(node[2], item))
        elif node[0] == "if":
            for condition, body in node[1]:
                if truth(condition, scope):
                    out.append(run(body, scope))
                    break
    return "".join(out)


def render(template: str, **scope) -> str:
    nodes, _ = parse(tokenize(template))
    return run(nodes, scope)
