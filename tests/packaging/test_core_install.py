"""``pip install cqrskit`` (no extras) is the framework alone: msgspec and nothing of the web,
CLI or PostgreSQL stacks, and the README's own-domain example runs on it, on SQLite."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: distributions that come only with the extras (names as pip lists them, lower case)
EXTRAS_ONLY = {
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "typer",
    "click",
    "rich",
    "prometheus-client",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
}


@pytest.fixture(scope="module")
def core_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh virtualenv with ``pip install <this repo>`` and no extras."""
    base = tmp_path_factory.mktemp("core-install")
    source = base / "source"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        check=True,
        timeout=600,
    )
    return python


def _run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_core_install_has_no_web_cli_or_postgres_library(
    core_python: Path, tmp_path: Path
) -> None:
    listed = _run(core_python, "-m", "pip", "list", "--format", "json", cwd=tmp_path)

    installed = {package["name"].lower() for package in json.loads(listed.stdout)}

    assert {"cqrskit", "msgspec"} <= installed
    assert installed & EXTRAS_ONLY == set()


def test_the_readme_example_runs_on_the_core_install_on_sqlite(
    core_python: Path, tmp_path: Path
) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Using the framework for your own domain") :]
    example = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert example is not None
    (tmp_path / "example.py").write_text(example.group(1))

    ran = _run(core_python, "example.py", cwd=tmp_path)

    assert ran.returncode == 0, ran.stderr
    opened, refused = ran.stdout.splitlines()
    assert re.fullmatch(r"opened account-A-[0-9a-f]{8} at version 1", opened)
    assert re.fullmatch(r"refused: account A-[0-9a-f]{8} is already open", refused)
    assert (tmp_path / "accounts.db").exists()


def test_a_postgresql_url_without_the_extra_says_which_extra_to_install(
    core_python: Path, tmp_path: Path
) -> None:
    script = (
        "import asyncio, cqrskit\n"
        "try:\n"
        "    asyncio.run(cqrskit.open_backend('postgresql://app:secret@127.0.0.1:1/orders'))\n"
        "except cqrskit.ConfigurationError as error:\n"
        "    print(error)\n"
    )

    ran = _run(core_python, "-c", script, cwd=tmp_path)

    assert ran.returncode == 0, ran.stderr
    assert "pip install 'cqrskit[postgres]'" in ran.stdout
    assert "secret" not in ran.stdout


def test_the_orders_command_without_the_service_extra_says_which_extra_to_install(
    core_python: Path, tmp_path: Path
) -> None:
    orders = core_python.parent / "orders"

    ran = subprocess.run(
        [str(orders), "--help"], cwd=tmp_path, capture_output=True, text=True, check=False
    )

    assert ran.returncode == 3
    assert "pip install 'cqrskit[service]'" in ran.stderr
    assert "Traceback" not in ran.stderr
