"""The Python examples in the README and docs run and print what the docs say they print.

An example is a ```python block. It either shows its output (a ```text block right after it,
with at most a line of prose between, compared as a doctest compares: ``...`` stands for any
text, such as a random id) or checks itself with ``assert``. An example that does neither
fails: an example that runs without showing or checking anything proves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE = re.compile(
    r"```python\n(?P<code>.*?)```\n"
    r"(?:\s*\n)?(?:[^`\n][^\n]*\n\s*\n?)?"  # at most one line of prose between
    r"(?:```text\n(?P<output>.*?)```)?",
    re.DOTALL,
)


def _examples() -> list[object]:
    found = []
    for path in DOCS:
        for number, match in enumerate(EXAMPLE.finditer(path.read_text()), start=1):
            found.append(pytest.param(match["code"], match["output"], id=f"{path.name}#{number}"))
    return found


examples = _examples()


def _run(code: str) -> str:
    """Run an example as a script (``main()`` called if it defines one); what it printed."""
    printed = io.StringIO()
    namespace: dict[str, object] = {"__name__": "docs_example"}
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "<docs>", "exec"), namespace)
        main = namespace.get("main")
        if callable(main):
            result = main()
            if asyncio.iscoroutine(result):
                asyncio.run(result)
    return printed.getvalue()


@pytest.mark.parametrize(("code", "output"), examples)
def test_example_prints_what_the_docs_show(
    code: str, output: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks_itself = re.search(r"^\s*assert\b", code, re.MULTILINE) is not None
    assert output is not None or checks_itself, (
        "an example must show its output (a ```text block after it) or assert what it does"
    )
    monkeypatch.chdir(tmp_path)
    printed = _run(code)
    if output is not None:
        checker = doctest.OutputChecker()
        assert checker.check_output(output, printed, doctest.ELLIPSIS), (
            f"the example printed:\n{printed}\nthe docs show:\n{output}"
        )


def test_there_are_examples() -> None:
    assert examples


def test_an_example_whose_output_differs_fails(tmp_path: Path) -> None:
    match = EXAMPLE.search('```python\nprint("one")\n```\n\nIt prints:\n\n```text\ntwo\n```\n')
    assert match is not None
    assert (match["code"], match["output"]) == ('print("one")\n', "two\n")
    assert not doctest.OutputChecker().check_output(match["output"], _run(match["code"]), 0)
