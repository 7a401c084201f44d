"""The decision result's JSON Schema and its typed Python model accept and refuse alike."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pydantic
import pytest

from nexus_contract.decision import DecisionResult, decision_schema

ALLOWED: dict[str, Any] = {
    "allowed": True,
    "http_status": 200,
    "headers": {"x-nexus-route-model": "gpt-4o"},
    "response_headers_to_add": {},
    "request_headers_to_remove": ["authorization", "x-nexus-approval"],
    "body": "",
    "reasons": [],
}
DENIED: dict[str, Any] = {
    "allowed": False,
    "http_status": 403,
    "headers": {"content-type": "application/json"},
    "response_headers_to_add": {},
    "request_headers_to_remove": [],
    "body": '{"error":"denied"}',
    "reasons": [
        {"rule": "nexus.rbac.permission_denied", "message": "no", "controls": ["SOC2:CC6.1"]}
    ],
}


def _with(base: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


VALID = [pytest.param(ALLOWED, id="allowed"), pytest.param(DENIED, id="denied")]
INVALID = [
    pytest.param(_with(ALLOWED, ("allowed",), "yes"), id="allowed not a boolean"),
    pytest.param(_with(ALLOWED, ("http_status",), 99), id="status out of range"),
    pytest.param(_with(ALLOWED, ("reasons",), KeyError), id="reasons missing"),
    pytest.param(_with(ALLOWED, ("verdict",), "allow"), id="unknown field"),
    pytest.param(_with(ALLOWED, ("headers", "x-n"), 1), id="header not a string"),
    pytest.param(_with(DENIED, ("reasons", 0, "controls"), "SOC2:CC6.1"), id="controls not a list"),
    pytest.param(_with(DENIED, ("reasons", 0, "message"), KeyError), id="reason without message"),
]


@pytest.mark.parametrize("decision", VALID)
def test_the_schema_and_the_model_accept_every_decision_shape(decision: dict[str, Any]) -> None:
    jsonschema.validate(decision, decision_schema())
    assert (
        DecisionResult.model_validate(decision).model_dump(mode="json", exclude_none=True)
        == decision
    )


@pytest.mark.parametrize("decision", INVALID)
def test_the_schema_and_the_model_refuse_the_same_shapes(decision: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(decision, decision_schema())
    with pytest.raises(pydantic.ValidationError):
        DecisionResult.model_validate(decision)
