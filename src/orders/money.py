"""Money as exact decimals in the domain and integer cents in the read model."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

__all__ = [
    "CENT",
    "average",
    "format_amount",
    "from_cents",
    "to_cents",
]

CENT = Decimal("0.01")


def to_cents(amount: Decimal) -> int:
    """``amount`` (at most two decimal places) as a whole number of cents."""
    return int((amount * 100).to_integral_exact())


def from_cents(cents: int) -> Decimal:
    """A whole number of cents as a decimal amount with two places."""
    return (Decimal(cents) / 100).quantize(CENT)


def average(total_cents: int, count: int) -> Decimal:
    """``total_cents / count`` as an amount, rounded half-to-even to the cent (0 if count is 0)."""
    if count == 0:
        return Decimal("0.00")
    return (Decimal(total_cents) / count / 100).quantize(CENT, rounding=ROUND_HALF_EVEN)


def format_amount(amount: Decimal) -> str:
    """``amount`` with exactly two places, e.g. ``"1176.00"``."""
    return str(amount.quantize(CENT))
