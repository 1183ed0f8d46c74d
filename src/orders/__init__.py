"""Orders: the reference service built on cqrskit (commands, read models, HTTP API, CLI)."""

__all__: list[str] = []
