"""The Python examples in the README and docs run, so the docs never rot."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)

examples = [
    pytest.param(code, id=f"{path.name}#{number}")
    for path in DOCS
    for number, code in enumerate(BLOCK.findall(path.read_text()), start=1)
]


@pytest.mark.parametrize("code", examples)
def test_example_runs(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "docs_example"}
    exec(compile(code, "<docs>", "exec"), namespace)
    main = namespace.get("main")
    if callable(main):
        result = main()
        if asyncio.iscoroutine(result):
            asyncio.run(result)


def test_there_are_examples() -> None:
    assert examples
