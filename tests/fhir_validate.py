#!/usr/bin/env python3
"""Validates every line of an NDJSON file of FHIR R4 AuditEvents (`caregate audit export
--format fhir`) with a FHIR model validator, for tests/fhir_export.rs.

The validator is the `fhir.resources` package (7.x or 8.x; .ci/run installs it): its R4B
AuditEvent model, strict pydantic parsing (unknown elements, wrong types, bad primitives such
as ids, codes, instants, base64 and missing required elements are errors). AuditEvent is the
same in R4 and R4B. What the models leave unchecked, and R4 requires, is checked here too: the
id's length, the required value sets (action, outcome, network type), empty values, and the
invariant sev-1 (an entity has a name or a query, not both).

Usage: fhir_validate.py FILE. Exit 0 when every event is valid, 1 naming each invalid line,
2 when the validator cannot be loaded (which must fail the test, not skip it)."""
import json
import re
import sys

try:
    import fhir.resources
    from fhir.resources.R4B.auditevent import AuditEvent
except ImportError as e:
    print(f"fhir_validate: cannot load fhir.resources R4B models ({e}); "
          "install with: python3 -m pip install 'fhir.resources>=7,<9'", file=sys.stderr)
    sys.exit(2)

ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
ACTIONS = {"C", "R", "U", "D", "E"}
OUTCOMES = {"0", "4", "8", "12"}
NETWORK_TYPES = {"1", "2", "3", "4", "5"}


def empties(value, path="$"):
    """FHIR has no empty strings, arrays or objects."""
    if value in ("", [], {}):
        yield f"{path} is empty"
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from empties(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from empties(v, f"{path}[{i}]")


def r4_rules(event):
    """What R4 requires beyond the model's types."""
    problems = list(empties(event))
    if event.get("resourceType") != "AuditEvent":
        problems.append("resourceType is not AuditEvent")
    if not ID.match(str(event.get("id", ""))):
        problems.append(f"id {event.get('id')!r} is not [A-Za-z0-9-.]{{1,64}}")
    if "action" in event and event["action"] not in ACTIONS:
        problems.append(f"action {event['action']!r} is not in audit-event-action")
    if "outcome" in event and event["outcome"] not in OUTCOMES:
        problems.append(f"outcome {event['outcome']!r} is not in audit-event-outcome")
    for i, agent in enumerate(event.get("agent", [])):
        net = agent.get("network")
        if net and net.get("type") not in NETWORK_TYPES:
            problems.append(f"agent[{i}].network.type {net.get('type')!r} is not in network-type")
    for i, entity in enumerate(event.get("entity", [])):
        if "name" in entity and "query" in entity:
            problems.append(f"entity[{i}] has both name and query (sev-1)")
    return problems


def parse(line):
    if hasattr(AuditEvent, "model_validate_json"):
        return AuditEvent.model_validate_json(line)
    return AuditEvent.parse_raw(line)


def main(path):
    valid, invalid = 0, 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                parse(line)
                problems = r4_rules(event)
            except Exception as e:  # the model's ValidationError, or JSON that is not
                problems = [str(e)]
            if problems:
                invalid += 1
                for p in problems:
                    print(f"{path}:{n}: {p}", file=sys.stderr)
            else:
                valid += 1
    print(f"fhir_validate: {valid} valid and {invalid} invalid AuditEvents "
          f"(fhir.resources {fhir.resources.__version__}, fhir.resources.R4B.auditevent)")
    return 1 if invalid or not valid else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: fhir_validate.py FILE.ndjson", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
