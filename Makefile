PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make serve PORT=8080 DB=postgresql://user@host/db`
PORT ?= 8000
DB ?=
PIP := $(BIN)/pip install --disable-pip-version-check --progress-bar on

.PHONY: install demo test lint serve bench screenshots mutate clean

$(VENV)/.created:
	@echo "==> creating a virtual environment in $(VENV) (with $(PYTHON))"
	$(PYTHON) -m venv $(VENV)
	@touch $@

# The service (CLI, HTTP) on SQLite: what `make demo` and `make serve` need.
$(VENV)/.service: pyproject.toml $(VENV)/.created
	@echo "==> installing cqrskit and the Orders service (msgspec, typer, rich, FastAPI, uvicorn)"
	$(PIP) -e '.[service]'
	@touch $@

# Everything the tests and benchmarks need (PostgreSQL driver, test tools, eventsourcing).
$(VENV)/.installed: pyproject.toml $(VENV)/.service
	@echo "==> installing the PostgreSQL and NATS drivers, OpenTelemetry and the test tools (pytest, mypy, ruff, ...)"
	$(PIP) -e '.[service,postgres,dev,bench]'
	@touch $@

install: $(VENV)/.installed

demo: $(VENV)/.service
	@echo "==> playing the Orders demo on a fresh SQLite database"
	$(BIN)/orders demo

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# The service with its live dashboard at the address it prints (the seed's demo orders on a fresh
# default database).
serve: $(VENV)/.service
	$(BIN)/orders serve --port $(PORT) $(if $(DB),--db '$(DB)',--demo)

# The dashboard's pictures in docs/ (Debian's chromium: apt-get install chromium)
screenshots: $(VENV)/.installed
	$(BIN)/python -m tests.browser.screenshots docs

# Benchmarks against the eventsourcing library: quick sizes; `make bench FULL=1` for the full run.
bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks $(if $(FULL),--full,)

# Mutation testing of the consistency-critical code (docs/testing.md); not part of CI.
# `make mutate MUTANTS='cqrskit.postgres._horizon*'` runs one part.
MUTANTS ?=
mutate: $(VENV)/.installed
	$(PIP) 'mutmut==3.8.1'
	$(BIN)/mutmut run $(MUTANTS)
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) .cqrskit .pytest_cache .mypy_cache .ruff_cache mutants
