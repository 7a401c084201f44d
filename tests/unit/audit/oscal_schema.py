"""NIST's OSCAL JSON schemas (assessment results, component definition), read at run time
from bootstrap's Maven cache.

The schema is draft-07, but its patterns use ``\\p{L}`` / ``\\p{N}``, which
Python's ``re`` lacks; the validator checks ``pattern`` with the ``regex``
package instead.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
import regex
from jsonschema import Draft7Validator, ValidationError, validators

from nexus_runtime.toolchain import maven_repository

LIBOSCAL_JAR = (
    maven_repository() / "gov/nist/secauto/oscal/liboscal-java/3.0.3/liboscal-java-3.0.3.jar"
)
AR_SCHEMA_MEMBER = "schema/json/oscal-ar_schema.json"
COMPONENT_SCHEMA_MEMBER = "schema/json/oscal-component-definition_schema.json"


def _unicode_pattern(
    validator: Any, pattern: str, instance: Any, _schema: Any
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not regex.search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def assessment_results_validator() -> Draft7Validator:
    return _validator(AR_SCHEMA_MEMBER)


def component_definition_validator() -> Draft7Validator:
    return _validator(COMPONENT_SCHEMA_MEMBER)


def _validator(member: str) -> Draft7Validator:
    if not LIBOSCAL_JAR.is_file():
        pytest.fail(
            f"NIST's OSCAL schema jar is not in the Maven cache: {LIBOSCAL_JAR}; "
            "run scripts/bootstrap (it fetches gov.nist.secauto.oscal:liboscal-java:3.0.3)"
        )
    with zipfile.ZipFile(LIBOSCAL_JAR) as jar:
        schema = json.loads(jar.read(member))
    validator_class = validators.extend(Draft7Validator, {"pattern": _unicode_pattern})
    validator: Draft7Validator = validator_class(
        schema, format_checker=Draft7Validator.FORMAT_CHECKER
    )
    return validator
