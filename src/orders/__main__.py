"""The ``orders`` command (and ``python -m orders``): the CLI, or how to install it."""

from __future__ import annotations

import sys

__all__ = ["main"]

_SERVICE_EXTRA = {"typer", "rich", "click", "fastapi", "starlette", "uvicorn", "prometheus_client"}


def main() -> None:
    """Run the ``orders`` CLI; without the ``service`` extra installed, say how to get it."""
    try:
        from orders.cli import main as cli
    except ModuleNotFoundError as error:
        if error.name not in _SERVICE_EXTRA:
            raise
        sys.stderr.write(
            f"error: the orders command needs {error.name}, which comes with the service "
            "extra: pip install 'cqrskit[service]'\n"
        )
        raise SystemExit(3) from None
    cli()


if __name__ == "__main__":
    main()
