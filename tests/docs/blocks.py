"""The code blocks of README.md, docs/ and the examples' READMEs, and the marker that says who runs each.

Every Python or shell block in the docs either runs in a test or is marked as an excerpt, by one
HTML comment line directly above its opening fence (no blank line between; it does not render):

``<!-- runs -->``
    ``tests/docs/test_blocks.py`` runs it as pasted (see ``run_page``): Python in a fresh
    interpreter, shell with ``bash -eu -o pipefail``, each with a time limit, in a temporary folder
    of the page's own on the embedded default (no ``TRACKING_*`` or ``CELERY_*`` variables).
    The page's blocks run in page order in that folder, so a later block sees what an earlier one
    made. A block whose first line is a comment naming a file (``# myapp/trackers.py``) is saved
    as that file, and is imported as a module to run it.
``<!-- runs: postgresql -->``
    the same, on a fresh PostgreSQL database of the test session: ``TRACKING_DATABASE_URL`` names
    it, and every ``postgresql://`` or ``postgresql+driver://`` URL in the block is replaced by it.
``<!-- runs: tests/path/test_x.py -->`` (optionally ``::test_name``)
    a test of its own runs the block; that file must read the page (name its file). A file block
    (above) marked so is still saved into the page's folder for the blocks after it.
``<!-- excerpt -->`` or ``<!-- excerpt: why -->``
    nothing runs it: a process that runs until stopped (a worker, beat, Flower, ``docker compose
    up``), an install from a package index, a fragment of a bigger file, a snippet that needs a
    running tracker. Say why, and name the test that covers the same ground if there is one.

Which blocks count, by the first word of the fence's info string:

- ``python``, ``py``, ``python3``: Python a reader pastes into a file or an interpreter;
- ``bash``, ``sh``, ``shell``, ``zsh``: commands a reader pastes into a terminal; ``console`` and
  ``shell-session`` too, where only the lines that start with ``$ `` are commands;
- no language at all: a reader cannot tell, so neither can we; label plain output ``text``.

Everything in ``DATA`` is not run and needs no marker: output (``text``), configuration files
(``ini``, ``toml``, ``yaml``, ``json``), diagrams, and SQL, which is written for the reader's
own database (the issue asks for Python and shell). A language in neither list is refused, so
that a typo (``pyhton``) cannot hide a block from the check: label it, or add it to ``DATA``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]

PYTHON = frozenset({"python", "py", "python3"})
SHELL = frozenset({"bash", "sh", "shell", "zsh", "console", "shell-session"})
UNLABELLED = ""
DATA = frozenset(
    {
        "text", "txt", "plain", "output", "log",
        "ini", "cfg", "conf", "toml", "yaml", "yml", "json", "jsonl", "env", "dotenv",
        "sql", "psql", "promql",
        "mermaid", "dot", "diff", "patch", "markdown", "md",
        "html", "xml", "css", "javascript", "js", "csv", "dockerfile", "jinja", "nginx",
    }
)  # fmt: skip

#: what may follow ``runs:`` other than a test path
RUN_MODES = ("", "postgresql")

_MARKER = re.compile(r"^<!--\s*([\w-]+)\s*(?::\s*(.*?))?\s*-->$")
_FILE = re.compile(r"^#\s*([\w][\w./-]*\.py)\s*$")

HOW_TO_MARK = """\
Mark a block with one of these lines directly above its opening fence (no blank line between):
  <!-- runs -->                   tests/docs/test_blocks.py runs it as pasted: Python in a fresh
                                  interpreter, shell with bash -eu, in a temporary folder of the
                                  page's own, on the embedded default (see tests/docs/blocks.py)
  <!-- runs: postgresql -->       the same, on a fresh PostgreSQL database
  <!-- runs: tests/x/test_y.py --> a test of your own reads this page and runs the block
  <!-- excerpt: why -->           nothing can run it here (a worker, Flower, an install, a
                                  fragment); say why, and name the test that covers it if any"""


@dataclass(frozen=True)
class Marker:
    """The HTML comment directly above a block's opening fence."""

    kind: Literal["runs", "excerpt"]
    #: what follows the colon ("" without one)
    detail: str


@dataclass(frozen=True)
class Block:
    """One code block of a page."""

    page: str  # relative to the repository: "README.md", "docs/operations.md"
    line: int  # the line of the opening fence, from 1
    language: str  # the first word of the info string, in lower case; "" when unlabelled
    text: str
    marker: Marker | None
    #: a problem with the comment above the fence (an unknown marker, a blank line before it)
    marker_problem: str | None = None
    #: the block's last line (its closing fence), from 1
    end: int = 0

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def counted(self) -> bool:
        """A Python, shell or unlabelled block: it must run in a test or be an excerpt."""
        return self.language in PYTHON or self.language in SHELL or self.language == UNLABELLED

    @property
    def file(self) -> str | None:
        """The path the block names on its first line (``# myapp/trackers.py``), if any."""
        first = self.text.split("\n", 1)[0].strip()
        found = _FILE.match(first) if self.language in PYTHON else None
        return found.group(1) if found else None

    @property
    def run_here(self) -> bool:
        """Whether tests/docs/test_blocks.py runs it (``runs`` or ``runs: postgresql``)."""
        return self.marker is not None and self.marker.kind == "runs" and self.marker.detail in RUN_MODES

    @property
    def excerpt(self) -> bool:
        return self.marker is not None and self.marker.kind == "excerpt"


def pages(root: Path = ROOT) -> list[Path]:
    """README.md, every page under docs/ and each example's README.md."""
    return [
        root / "README.md",
        *sorted((root / "docs").rglob("*.md")),
        *sorted(root.glob("examples/*/README.md")),
    ]


def read_marker(line: str) -> Marker | str | None:
    """The marker on ``line``; a problem (str) for a comment that looks like one but is not; None."""
    found = _MARKER.match(line.strip())
    if found is None:
        return None
    word, detail = found.group(1).lower(), (found.group(2) or "").strip()
    if word == "runs":
        return Marker("runs", detail)
    if word == "excerpt":
        return Marker("excerpt", detail)
    if word.startswith(("run", "exc", "exe")):
        return f"unknown marker <!-- {word} -->: write <!-- runs --> or <!-- excerpt -->"
    return None


def parse(text: str, page: str) -> list[Block]:
    """The code blocks of one page (fenced and indented, as CommonMark reads them)."""
    lines = text.split("\n")
    blocks: list[Block] = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type not in ("fence", "code_block") or token.map is None:
            continue
        start = token.map[0]
        language = token.info.split()[0].lower() if token.info.strip() else UNLABELLED
        above = read_marker(lines[start - 1]) if start > 0 else None
        problem = above if isinstance(above, str) else None
        marker = above if isinstance(above, Marker) else None
        if above is None and start > 1 and not lines[start - 1].strip():
            higher = read_marker(lines[start - 2])
            if isinstance(higher, Marker):
                problem = "a blank line separates the marker from the fence: remove it"
        blocks.append(Block(page, start + 1, language, token.content, marker, problem, token.map[1]))
    return blocks


def page_blocks(path: Path, root: Path = ROOT) -> list[Block]:
    return parse(path.read_text(encoding="utf-8"), path.relative_to(root).as_posix())


def problems(blocks: Iterable[Block], root: Path = ROOT) -> list[str]:
    """What is wrong with the markers of these blocks, one message per problem, each saying what
    to do."""
    found: list[str] = []
    for block in blocks:
        found.extend(f"{block.where}: {problem}" for problem in _problems(block, root))
    return found


def _problems(block: Block, root: Path) -> list[str]:
    if block.marker_problem is not None:
        return [block.marker_problem]
    label = f"```{block.language}" if block.language else "``` (unlabelled)"
    if not block.counted:
        if block.language not in DATA:
            return [
                f"{label} is neither a Python or shell language ({', '.join(sorted(PYTHON | SHELL))}) "
                f"nor one known as data in tests/docs/blocks.py DATA: label the block with one of "
                f"those, or add the language to DATA"
            ]
        if block.marker is not None and block.marker.kind == "runs":
            return [f"{label} blocks are data and never run: remove the <!-- runs --> marker"]
        return []
    if block.marker is None:
        hint = "; plain output takes ```text and needs no marker" if not block.language else ""
        return [
            f"this {label} block is not run by a test and not marked as an excerpt: put a marker line "
            f"directly above its opening fence (below){hint}"
        ]
    if block.marker.kind == "excerpt":
        return []
    return _runs_problems(block, block.marker.detail, root)


def _runs_problems(block: Block, detail: str, root: Path) -> list[str]:
    if detail in RUN_MODES:
        if block.language == UNLABELLED:
            return ["an unlabelled block cannot run: label it ```python or ```bash"]
        if block.language in ("console", "shell-session") and not commands(block):
            return ["a console block runs its lines that start with '$ ', and this one has none"]
        return []
    path, _, name = detail.partition("::")
    test = root / path
    if not path.startswith("tests/") or not path.endswith(".py"):
        modes = ", ".join(f"<!-- runs: {mode} -->" if mode else "<!-- runs -->" for mode in RUN_MODES)
        return [f"unknown <!-- runs: {detail} -->: write {modes} or <!-- runs: tests/path/test_x.py -->"]
    if not test.is_file():
        return [f"<!-- runs: {detail} --> names a test file that does not exist"]
    source = test.read_text(encoding="utf-8")
    found: list[str] = []
    if Path(block.page).name not in source:
        found.append(f"{path} does not read {block.page} (its name does not appear in it)")
    if name and not re.search(rf"^\s*def {re.escape(name)}\(", source, flags=re.MULTILINE):
        found.append(f"{path} has no test named {name}")
    return found


def stray_markers(text: str, page: str) -> list[str]:
    """Marker lines that are not directly above any code block: they mark nothing (lines inside a
    block, such as an example of a marker, are not markers)."""
    blocks = parse(text, page)
    above = {block.line - 1 for block in blocks}
    above |= {block.line - 2 for block in blocks if block.marker_problem is not None}
    above |= {number for block in blocks for number in range(block.line, block.end + 1)}
    return [
        f"{page}:{number}: this marker is not directly above an opening fence, so it marks nothing"
        for number, line in enumerate(text.split("\n"), start=1)
        if isinstance(read_marker(line), Marker) and number not in above
    ]


def commands(block: Block) -> str:
    """The shell script of a shell block: for ``console``, its ``$ `` lines without the prompt."""
    if block.language not in ("console", "shell-session"):
        return block.text
    return "\n".join(line[2:] for line in block.text.split("\n") if line.startswith("$ "))
