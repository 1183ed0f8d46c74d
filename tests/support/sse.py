"""A small reader of server-sent events for tests, over an httpx streaming response."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class ServerSentEvent:
    id: str | None = None
    event: str = "message"
    data_lines: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    @property
    def data(self) -> Any:
        return json.loads("\n".join(self.data_lines))


def read_events(
    response: httpx.Response, *, with_comments: bool = False
) -> Iterator[ServerSentEvent]:
    """The events of ``response`` as they arrive (comment-only blocks too, if asked)."""
    current = ServerSentEvent()
    for line in response.iter_lines():
        if line == "":
            if current.data_lines or (with_comments and current.comments):
                yield current
            current = ServerSentEvent()
        elif line.startswith(":"):
            current.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                current.id = value
            elif name == "event":
                current.event = value
            elif name == "data":
                current.data_lines.append(value)
