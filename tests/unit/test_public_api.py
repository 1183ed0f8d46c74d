"""The public surface: every public module says what it exports (``__all__``), exports only
what exists and is public, and the framework's exports are exactly those docs/api.md lists."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import cqrskit
import orders

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
_SECTION = re.compile(r"^## `([a-z_.]+)`$")
_ENTRY = re.compile(r"^- `([A-Za-z_][A-Za-z0-9_]*)`")
_CONTRACTS = (
    "cqrskit.testing.dead_letter_contract",
    "cqrskit.testing.event_store_contract",
    "cqrskit.testing.read_store_contract",
    "cqrskit.testing.snapshot_store_contract",
)


def _public_modules(package: ModuleType) -> list[str]:
    found = [package.__name__]
    for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return found


def _documented() -> dict[str, set[str]]:
    sections: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in API_DOC.read_text().splitlines():
        if heading := _SECTION.match(line):
            current = sections.setdefault(heading.group(1), set())
        elif (entry := _ENTRY.match(line)) and current is not None:
            current.add(entry.group(1))
    return sections


FRAMEWORK = _public_modules(cqrskit)
SERVICE = [name for name in _public_modules(orders) if name != "orders.__main__"]


@pytest.mark.parametrize("name", FRAMEWORK + SERVICE)
def test_every_public_module_exports_only_existing_public_names(name: str) -> None:
    module = importlib.import_module(name)

    exported = getattr(module, "__all__", None)

    assert isinstance(exported, list), f"{name} has no __all__"
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    assert [n for n in exported if n.startswith("_")] == []
    assert [n for n in exported if not hasattr(module, n)] == []


@pytest.mark.parametrize("name", FRAMEWORK)
def test_every_class_and_function_a_framework_module_defines_is_exported_or_private(
    name: str,
) -> None:
    module = importlib.import_module(name)

    defined_here = {
        attribute
        for attribute, value in vars(module).items()
        if (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == name
        and not attribute.startswith("_")
    }

    assert defined_here - set(module.__all__) == set()


@pytest.mark.parametrize("name", [n for n in FRAMEWORK if n not in _CONTRACTS])
def test_the_framework_exports_exactly_what_the_api_reference_documents(name: str) -> None:
    documented = _documented()

    assert name in documented, f"docs/api.md has no section for {name}"
    assert set(importlib.import_module(name).__all__) == documented[name]


def test_the_api_reference_documents_no_module_that_is_not_public() -> None:
    assert set(_documented()) <= set(FRAMEWORK)


@pytest.mark.parametrize("name", _CONTRACTS)
def test_a_contract_suite_exports_its_tests(name: str) -> None:
    module = importlib.import_module(name)

    tests = {n for n, value in vars(module).items() if n.startswith("test_") and callable(value)}

    assert tests
    assert set(module.__all__) == tests
