"""Docs that run: every Python and shell block of README.md and docs/ runs in a test or is marked
as an excerpt (the markers and the languages that count: tests/docs/blocks.py), and the blocks
marked ``runs`` run here, as pasted, page by page."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.blocks import HOW_TO_MARK, ROOT, page_blocks, pages, parse, problems, stray_markers
from tests.docs.running import run_page

PAGES = {path.relative_to(ROOT).as_posix(): page_blocks(path) for path in pages()}
RUNNABLE = [page for page, blocks in PAGES.items() if any(block.run_here for block in blocks)]


def test_every_python_and_shell_block_in_the_docs_runs_in_a_test_or_is_marked_as_an_excerpt() -> None:
    found = [problem for blocks in PAGES.values() for problem in problems(blocks)]
    for path in pages():
        found += stray_markers(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    assert not found, "\n".join([*found, "", HOW_TO_MARK])


def test_the_docs_have_blocks_that_run_here_and_blocks_a_test_of_their_own_runs() -> None:
    markers = [block.marker for blocks in PAGES.values() for block in blocks if block.marker]
    assert "README.md" in RUNNABLE and len(RUNNABLE) >= 4
    assert any(marker.detail.startswith("tests/unit/test_readme_quick_start.py") for marker in markers)
    assert any(marker.detail == "postgresql" for marker in markers)


@pytest.mark.parametrize("page", RUNNABLE)
def test_the_blocks_of_each_page_run_as_pasted(
    page: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    blocks = PAGES[page]
    database_url: str | None = None
    if any(block.run_here and block.marker and block.marker.detail == "postgresql" for block in blocks):
        database_url = request.getfixturevalue("pg_database")
    failures = run_page(blocks, tmp_path, database_url)
    assert not failures, "\n\n".join(str(failure) for failure in failures)


# -- the check and the runner can fail ---------------------------------------------------------------

SAMPLE = """\
# A page

```python
print("nobody runs me")
```

<!-- excerpt -->

```bash
celery -A tracking worker
```

<!-- runs: tests/docs/test_nothing_here.py -->
```python
x = 1
```

<!-- runs: tests/unit/test_readme_quick_start.py -->
```python
x = 2
```

```text
output needs no marker
```

```pyhton
print("a typo")
```

- a list item with an indented block:

  <!-- excerpt: a fragment -->
  ```sh
  exit 1
  ```

<!-- runs -->
Some prose, and no block.

```markdown
<!-- excerpt -->
```
"""


def test_a_block_nobody_runs_fails_the_check_and_the_message_says_what_to_do() -> None:
    blocks = parse(SAMPLE, "docs/sample.md")
    found = problems(blocks) + stray_markers(SAMPLE, "docs/sample.md")
    assert [block.line for block in blocks] == [3, 9, 14, 19, 23, 27, 34, 41]
    assert found[0].startswith("docs/sample.md:3: this ```python block is not run by a test")
    assert "put a marker line directly above its opening fence" in found[0]
    assert "<!-- runs -->" in HOW_TO_MARK and "<!-- excerpt: why -->" in HOW_TO_MARK
    assert found[1] == "docs/sample.md:9: a blank line separates the marker from the fence: remove it"
    assert found[2] == (
        "docs/sample.md:14: <!-- runs: tests/docs/test_nothing_here.py --> "
        "names a test file that does not exist"
    )
    assert found[3] == (
        "docs/sample.md:19: tests/unit/test_readme_quick_start.py does not read docs/sample.md "
        "(its name does not appear in it)"
    )
    assert found[4].startswith("docs/sample.md:27: ```pyhton is neither a Python or shell language")
    assert found[5:] == [
        "docs/sample.md:38: this marker is not directly above an opening fence, so it marks nothing"
    ]
    assert blocks[6].excerpt and blocks[6].text == "exit 1\n"


def test_a_block_that_fails_as_pasted_fails_its_page_with_its_line_and_output(tmp_path: Path) -> None:
    page = """\
<!-- runs -->
```python
# pkg/values.py
ANSWER = 42
```

<!-- runs -->
```python
from pkg.values import ANSWER

print("the answer is", ANSWER)
raise SystemExit(f"expected {ANSWER + 1}")
```

<!-- runs -->
```bash
tail -f /dev/null
```
"""
    failures = run_page(parse(page, "docs/sample.md"), tmp_path, timeout=2)
    assert [failure.block.line for failure in failures] == [8, 16]
    assert (tmp_path / "pkg" / "values.py").read_text() == "# pkg/values.py\nANSWER = 42\n"
    assert failures[0].reason.startswith("exited with status 1")
    assert failures[0].output == "the answer is 42\nexpected 43\n"
    assert failures[1].reason.startswith("did not finish within 2 s")
