"""Every answer the server gives agrees with the schema it serves (schemathesis' response-conformance check):
generated requests for every operation, against real objects, on a real server. Bounded to well under a
minute, and derandomized so that a run is repeatable."""

from __future__ import annotations

import time
from typing import Any

import pytest
import web
from server_fixtures import LiveServer

EXAMPLES = 20
BUDGET = 60.0


@pytest.mark.timeout(180)
def test_every_response_conforms_to_the_served_schema(sqlite_server: LiveServer) -> None:
    # imported here, not at collection: every xdist worker collects this module, and these two take a second
    schemathesis = pytest.importorskip("schemathesis")
    hypothesis = pytest.importorskip("hypothesis")
    from schemathesis.checks import not_a_server_error, response_schema_conformance

    live = sqlite_server
    headers = live.headers()
    # objects for the generated requests to find: a task with every nullable field null, and an action on it
    task = web.post(live.tasks_url, json={"name": "seed"}, headers=headers).json()
    assert task["queue"] is None and task["external_id"] is None and task["ref"] is None
    action = web.post(
        f"{task['url']}actions/",
        json={"trigger": "success", "integration": "email", "config": {"to": "ops@example.com"}},
        headers=headers,
    ).json()
    known = {
        "organization_slug": live.organization,
        "project_slug": live.project,
        "task_id": task["id"],
        "id": task["id"],
    }
    schema = schemathesis.openapi.from_url(f"{live.url}/api/schema/?format=json")
    deadline = time.monotonic() + BUDGET
    calls = 0

    def run(operation: Any) -> None:
        is_action = operation.path.endswith("/actions/{id}/")

        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy())
        def check(case: Any) -> None:
            nonlocal calls
            if time.monotonic() > deadline:
                return
            for name in case.path_parameters or {}:
                if name in known:
                    case.path_parameters[name] = known[name]
            if is_action:
                case.path_parameters["id"] = action["id"]
            calls += 1
            case.call_and_validate(
                base_url=live.url, headers=headers, checks=[not_a_server_error, response_schema_conformance]
            )

        check()

    for result in schema.get_all_operations():
        run(result.ok())
    assert calls > 100, calls
