"""Property-based fuzzing of the running service against its own OpenAPI schema (schemathesis):
no 5xx for any input, and every response matches the schema (status, content type, body).

Both valid inputs (positive mode) and inputs that break the schema (negative mode) are sent; the
number of examples is bounded so the whole run stays around a minute.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.schemas import APIOperation

from tests.e2e.conftest import StartServer

TOKEN = re.compile(r"^[0-9]{1,30}$")
EXAMPLES = {GenerationMode.POSITIVE: 80, GenerationMode.NEGATIVE: 40}


def fuzz(operation: APIOperation, mode: GenerationMode, token: str, calls: Counter[str]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Case) -> None:
        realistic(case, mode, token)
        case.call_and_validate()
        calls[operation.label] += 1

    try:
        check()
    except Unsatisfiable:
        # Negative mode cannot break an operation that takes no input at all.
        assert mode is GenerationMode.NEGATIVE
        inputs = (operation.path_parameters, operation.query, operation.headers, operation.body)
        assert not any(inputs)


def realistic(case: Case, mode: GenerationMode, token: str) -> None:
    """Replace what no schema can generate validly: values the service hands out itself.

    A well-formed consistency token the service never issued makes a read wait for the full
    timeout and answer 504 (by design, tested elsewhere), and an opaque cursor it did not issue
    is refused (422); a client makes one idempotency key per logical request, while hypothesis
    would reuse one with another body (refused, 422, tested elsewhere).
    """
    headers = case.headers if case.headers is not None else {}
    if TOKEN.match(str(headers.get("Consistency-Token", ""))):
        headers["Consistency-Token"] = token
    if mode is GenerationMode.POSITIVE:
        if "Idempotency-Key" in headers:
            headers["Idempotency-Key"] = str(uuid.uuid4())
        if case.query:
            case.query.pop("cursor", None)


# schemathesis' own strategies draw from `random` in some cases (its bug, not ours).
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_the_service_honours_its_own_schema(start_server: StartServer) -> None:
    running = start_server()
    schema = schemathesis.openapi.from_url(f"{running.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 15
    with running.client() as client:
        created = client.post("/orders", json={"customer_id": "C-fuzz", "items": []})
        token = created.headers["Consistency-Token"]
    calls: Counter[str] = Counter()
    for operation in operations:
        for mode in EXAMPLES:
            fuzz(operation, mode, token, calls)
    assert set(calls) == {operation.label for operation in operations}
