"""The Orders service's error policy per projection, from the environment."""

from __future__ import annotations

import pytest

from cqrskit import ConfigurationError, ErrorPolicy
from orders.app import DEFAULT_ERROR_POLICIES, Settings


def test_by_default_orders_parks_and_the_stats_stop() -> None:
    assert Settings.from_env({}).projection_errors == {
        "orders": ErrorPolicy.PARK,
        "order_stats": ErrorPolicy.STOP,
    }
    assert Settings().projection_errors == DEFAULT_ERROR_POLICIES


def test_the_environment_sets_a_projection_either_way_and_keeps_the_others() -> None:
    settings = Settings.from_env({"CQRSKIT_PROJECTION_ERRORS": " orders = stop "})

    assert settings.projection_errors == {
        "orders": ErrorPolicy.STOP,
        "order_stats": ErrorPolicy.STOP,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("orders=retry", "'orders=retry' is not PROJECTION=stop or PROJECTION=park"),
        ("orders", "'orders' is not PROJECTION=stop or PROJECTION=park"),
        ("shipping=park", "no projection 'shipping' (known: orders, order_stats)"),
    ],
)
def test_a_policy_that_is_not_stop_or_park_or_a_projection_that_is_not_known_is_refused(
    text: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env({"CQRSKIT_PROJECTION_ERRORS": text})
