"""Reading the code fences of a Markdown page, in order, and the shell commands in them.

A fence's info string says what it is (``python``, ``console``, ``sh``, ``toml``...). An HTML comment on the
line just above a fence, ``<!-- not run: why -->``, keeps it out of the run (invisible on the rendered page).
Python fences of one page run in order and share their names, so a page may build an example step by step;
shell commands run against the same sandbox.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)

PYTHON = ("python", "py")
SHELL = ("console", "sh", "bash", "shell")


@dataclass(frozen=True)
class Fence:
    path: Path
    line: int
    """1-based line of the fence's first body line."""
    lang: str
    info: str
    body: str
    skipped: bool = False

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def fences(path: Path) -> list[Fence]:
    text = path.read_text()
    found = []
    for match in _FENCE.finditer(text):
        info = match.group("info").strip()
        lang = info.split(None, 1)[0].lower() if info else ""
        line = text[: match.start("body")].count("\n") + 1
        body = "\n".join(row[len(match.group("indent")) :] for row in match.group("body").splitlines())
        above = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        skipped = above.startswith("<!-- not run:") and above.endswith("-->")
        found.append(Fence(path, line, lang, info, body + "\n", skipped))
    return found


@dataclass
class Command:
    """One shell command line of a snippet, with the output the page shows for it (console fences)."""

    text: str
    line: int
    shown: list[str] = field(default_factory=list)

    @property
    def shown_error(self) -> str | None:
        return next((s for s in self.shown if s.startswith("error: ")), None)


def commands(fence: Fence) -> list[Command]:
    """``$ ...`` lines (and their ``\\`` continuations) of a console fence; every line of an sh fence."""
    found: list[Command] = []
    pending = ""
    for offset, raw in enumerate(fence.body.splitlines()):
        line = raw.rstrip()
        if fence.lang == "console" and not pending:
            if not line.startswith("$ "):
                if found and line:
                    found[-1].shown.append(line)
                continue
            line = line[2:]
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        found.append(Command(pending + line, fence.line + offset))
        pending = ""
    return found


def pipeline(text: str) -> list[list[list[str]]]:
    """``a && b | c`` -> [[a], [b, c]]: steps joined by ``&&``, each a pipe of argument lists."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars="|&")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    steps: list[list[list[str]]] = [[[]]]
    for token in lexer:
        if token == "&&":
            steps.append([[]])
        elif token == "|":
            steps[-1].append([])
        else:
            steps[-1][-1].append(token)
    return [[argv for argv in step if argv] for step in steps if any(step)]
