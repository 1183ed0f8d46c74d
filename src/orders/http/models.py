"""Request and response bodies of the HTTP API (pydantic models: they make the OpenAPI schema).

Amounts go out as strings with two places (``"1176.00"``). Prices come in as JSON strings
(``"999.00"``) or as JSON numbers that are exact to the cent: the service parses numbers from
their text as :class:`~decimal.Decimal` (see :mod:`orders.http.jsonbody`), never through a
binary float, so ``0.001``, ``1e-7`` or ``999.000000000000000001`` are refused rather than
rounded.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

from orders.domain import INVISIBLE_BMP, MAX_ITEMS, MAX_PRICE, MAX_QUANTITY, MAX_TEXT
from orders.money import CENT

__all__ = [
    "AMOUNT_STRING",
    "ID_PATTERN",
    "MAX_ITEMS",
    "PRICE_STRING",
    "TEXT_PATTERN",
    "Amount",
    "CommandAccepted",
    "CreateOrderIn",
    "CurrentEventOut",
    "DailyStatsOut",
    "DashboardOut",
    "DayOut",
    "DeadLetterOut",
    "DeadLettersOut",
    "DiscardOut",
    "EventOut",
    "EventsOut",
    "HealthOut",
    "Id",
    "ItemIn",
    "ItemOut",
    "ItemsIn",
    "Name",
    "OrderOut",
    "OrderPageOut",
    "Price",
    "ProblemOut",
    "ProjectionOut",
    "Quantity",
    "ReadyOut",
    "RetryOut",
]

#: ids that travel in URLs: letters, digits and ``. _ : @ ~ -``
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@~-]{0,99}$"
#: free text: no control characters, and at least one character that shows (not only white
#: space, zero-width or bidi controls: ``orders.domain.INVISIBLE_BMP``). The characters are
#: spelled out rather than written ``\s``, whose meaning differs between JSON Schema
#: (ECMAScript), pydantic (Rust) and Python (U+0085 and U+FEFF), so that clients and server
#: agree on what is valid. Invisible characters beyond the BMP are refused by the domain.
TEXT_PATTERN = rf"^[^\x00-\x1f\x7f]*[^{INVISIBLE_BMP}][^\x00-\x1f\x7f]*$"
#: 0 to 1000000.00 (MAX_PRICE), at most two places
PRICE_STRING = r"^([0-9]{1,6}(\.[0-9]{1,2})?|1000000(\.0{1,2})?)$"
AMOUNT_STRING = r"^-?[0-9]+\.[0-9]{2}$"

_price_string = re.compile(PRICE_STRING)


def _parse_price(value: Any) -> Decimal:
    """A price as an exact Decimal; ValueError (→ 422) for anything else (pydantic turns
    only ValueError and AssertionError into validation errors)."""
    if isinstance(value, bool):
        raise ValueError("price must be a decimal string or number, not a boolean")
    if isinstance(value, str):
        if not _price_string.match(value):
            raise ValueError("price must be a decimal string like '999.00' (at most 2 places)")
        price = Decimal(value)
    elif isinstance(value, int | Decimal):
        price = Decimal(value)
    else:
        # A binary float has already lost the digits the client sent: refuse it rather than
        # guess (JSON bodies are decoded with numbers as Decimal, so this is a programming error
        # or a non-JSON caller).
        raise ValueError("price must be a decimal string or an exact JSON number")
    # Range first: quantize() of a huge number raises InvalidOperation.
    if not price.is_finite() or not Decimal(0) <= price <= MAX_PRICE:
        raise ValueError(f"price must be from 0 to {MAX_PRICE}")
    if price != price.quantize(CENT):
        raise ValueError("price must be exact to the cent (at most two decimal places)")
    return price.quantize(CENT)


Price = Annotated[
    Decimal,
    BeforeValidator(_parse_price),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": PRICE_STRING},
                {"type": "number", "minimum": 0, "maximum": float(MAX_PRICE), "multipleOf": 0.01},
            ],
            "description": 'unit price, exact to the cent: a string like "999.00" or a JSON '
            "number with at most two decimal places",
            "examples": ["999.00"],
        }
    ),
]


def _whole_number(value: Any) -> Any:
    # JSON does not tell 2 from 2.0 (JSON Schema calls both integers): an integral number is
    # taken exactly; 1.5, true or "1" go on to fail the strict integer check.
    if (
        isinstance(value, Decimal)
        and value.is_finite()
        and value.adjusted() < 18  # never build a million-digit int from 1e999999
        and value == value.to_integral_value()
    ):
        return int(value)
    return value


Quantity = Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY), BeforeValidator(_whole_number)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT, pattern=TEXT_PATTERN)]
Id = Annotated[StrictStr, Field(min_length=1, max_length=100, pattern=ID_PATTERN)]
Amount = Annotated[str, Field(pattern=AMOUNT_STRING, examples=["1176.00"])]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemIn(_Body):
    """A line of an order."""

    name: Name
    price: Price
    quantity: Quantity


class ItemsIn(_Body):
    """Several lines to add to an order at once (one event: all of them or none)."""

    items: Annotated[list[ItemIn], Field(min_length=1, max_length=MAX_ITEMS)]


class CreateOrderIn(_Body):
    """A new draft order. Without ``order_id`` the service makes one up (``ORD-<uuid>``)."""

    order_id: Id | None = None
    customer_id: Id
    items: Annotated[list[ItemIn], Field(max_length=MAX_ITEMS)]


class CommandAccepted(BaseModel):
    """A command's outcome: the order, its new version and the token to read it back."""

    order_id: str
    version: int
    consistency_token: str = Field(
        description="send back as the Consistency-Token header of a query to read this write"
    )


class ItemOut(BaseModel):
    name: str
    price: Amount
    quantity: int


class OrderOut(BaseModel):
    order_id: str
    customer_id: str
    status: Literal["draft", "submitted"]
    items: list[ItemOut]
    total: Amount
    item_count: int
    created_at: datetime
    submitted_at: datetime | None


class OrderPageOut(BaseModel):
    orders: list[OrderOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: last")


class DashboardOut(BaseModel):
    total_orders: int
    total_revenue: Amount
    draft_orders: int
    submitted_orders: int
    average_order_value: Amount


class DayOut(BaseModel):
    date: str = Field(description="UTC date of submission, YYYY-MM-DD")
    count: int
    revenue: Amount


class DailyStatsOut(BaseModel):
    days: list[DayOut]


class CurrentEventOut(BaseModel):
    """An event as this release reads it: upcast when it was stored in an earlier shape."""

    type: str
    schema_version: int
    data: dict[str, Any]


class EventOut(BaseModel):
    """An event as stored (never rewritten), with its current form beside it."""

    event_id: str
    stream_id: str
    version: int
    position: str = Field(description="global position, as an opaque string")
    type: str
    schema_version: int
    recorded_at: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]
    current: CurrentEventOut | None = Field(
        description="the event as this release reads it (upcast from an earlier shape or "
        "name); null when this release cannot read it"
    )


class EventsOut(BaseModel):
    order_id: str
    events: list[EventOut]


class DeadLetterOut(BaseModel):
    """An event a projection could not apply (``docs/lifecycle.md``, "Dead letters")."""

    projection: str
    position: str = Field(description="the event's global position")
    stream_id: str
    stream_version: int
    event_type: str = Field(description="as stored")
    schema_version: int = Field(description="as stored")
    recorded_at: datetime
    data: Any = Field(description="the stored payload")
    status: Literal["parked", "halted"] = Field(
        description="parked (policy park) or the event the projection halted at (policy stop)"
    )
    blocked_by: str | None = Field(
        description="the position of the dead letter of its stream it waits behind, if any"
    )
    attempts: int = Field(description="failed attempts (0: it waits behind another)")
    error: str
    traceback: str
    failed_at: datetime


class DeadLettersOut(BaseModel):
    dead_letters: list[DeadLetterOut]


class RetryOut(BaseModel):
    projection: str
    applied: int = Field(description="dead letters applied (and removed)")
    failed: list[DeadLetterOut] = Field(description="failed again: kept, with the new error")


class DiscardOut(BaseModel):
    projection: str
    discarded: int = Field(description="dead letters dropped unapplied")


class ProjectionOut(BaseModel):
    name: str
    state: Literal[
        "running",
        "catching_up",
        "standing_by",
        "backing_off",
        "retrying",
        "stopped",
        "external",
        "halted",
        "retired",
    ] = Field(description="what the projection is doing in this process (external: run elsewhere)")
    version: int = Field(description="the projection version (blue/green: a new one builds aside)")
    role: Literal["serving", "building", "retired"] = Field(
        description="serving: answers queries; building: serves once caught up; retired: replaced"
    )
    position: str = Field(description="the checkpoint: the global position applied up to")
    head: str | None = Field(description="the event store's head (null: the store is unreachable)")
    running: bool | None = Field(
        description="alive in this process (running, catching up or standing by for its lease);"
        " null when projections run in another process"
    )
    lag_events: int | None = Field(description="events not yet applied (counted up to a cap)")
    lag_seconds: float | None = Field(description="age of the oldest event not yet applied")
    events_per_second: float = Field(description="applied by this process, last 10 s")
    restarts: int = Field(description="restarts after an error, in this process")
    last_error: str | None = Field(description="the error that last stopped it in this process")
    retry_in: float | None = Field(description="seconds until its next restart (backing off)")
    dead_letters: int | None = Field(
        default=None, description="events it parked (policy park); null: the store did not answer"
    )
    halted: DeadLetterOut | None = Field(
        default=None, description="the event it halted at (policy stop), wherever it runs"
    )


class ReadyOut(BaseModel):
    ready: bool
    store: Literal["reachable", "unreachable"]
    projections_mode: Literal["in-process", "external"]
    projections: list[ProjectionOut]
    reasons: list[str] = Field(description="why the service is not ready (empty when it is)")
    warnings: list[str] = Field(
        default_factory=list,
        description="what needs a person but does not make the service unready: a halted"
        " projection, dead letters",
    )


class HealthOut(BaseModel):
    status: Literal["ok"]


class ProblemOut(BaseModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[dict[str, Any]] | None = None
    order_id: str | None = None
