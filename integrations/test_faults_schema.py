"""Schemathesis with every check (``--checks all``) and every phase (examples, coverage, fuzzing, stateful
links) against the schema a real ``taskreport serve`` process serves, on PostgreSQL.

tests/server/test_server_schema_conformance.py checks two things (no 5xx, responses that match the schema)
on an in-process server on SQLite; this run holds the served schema and the server to every check
schemathesis has (but the one that does not apply, below), through the CLI's own HTTP stack, on PostgreSQL.
It is bounded by the examples per operation, not by a clock. Where the task API departs from what a check
expects by design, the configuration says so, and why.

PostgreSQL text can not hold NUL, and ids and filters with one made server errors there and only there; the
run does not reliably generate them, so a test of its own holds that."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import web
from _faults import ORGANIZATION, PROJECT, Served, postgres_store

# found, not imported: the test runs its CLI, and importing it costs every xdist worker's collection a second
if importlib.util.find_spec("schemathesis") is None:
    pytest.skip("schemathesis is not installed (it is in the dev extra)", allow_module_level=True)
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
TASKS = "/api/{organization_slug}/{project_slug}/tasks/"


# one server for the module's tests (the group asks xdist for one worker): a start costs seconds of CPU
pytestmark = pytest.mark.xdist_group("faults-schema")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with postgres_store() as store:
        served = Served(store, tmp_path_factory.mktemp("server"))
        served.start()
        try:
            yield served
        finally:
            served.stop()


#: the one check that does not hold for this API by design: DELETE on a task or an action cancels it, and it
#: stays, readable, with status cancelled (docs/server.md)
NOT_THIS_API = "use_after_free"


def _config(task_id: str, action_id: int) -> str:
    return f"""
# schema-valid is not always valid: the task API refuses with 400 what its schema can not say (a parent that
# is not a task of the project, a trigger that is not a point, an integration this server does not have,
# NUL in text, a page_size of 0), as Django REST framework does; any other refusal still fails
[checks.positive_data_acceptance]
enabled = true
expected-statuses = ["2xx", "3xx", 400, 401, 403, 404, 409, 429]

# every operation in the project the token can see, on objects that exist (unknown ones are plain 404s);
# DELETE only cancels, so the task and its action stay for the operations after it
[parameters]
"path.organization_slug" = "{ORGANIZATION}"
"path.project_slug" = "{PROJECT}"
"path.task_id" = "{task_id}"

[[operations]]
include-path = "{TASKS}{{id}}/"
parameters = {{ "path.id" = "{task_id}" }}

[[operations]]
include-path = "{TASKS}{{task_id}}/actions/{{id}}/"
parameters = {{ "path.id" = {action_id} }}

# what the task writes take beyond their schema, so that a 2xx to it is not a failure: times as epoch seconds
# and time_to_start as a number (the validation the embedded store shares, where Python callers pass them),
# Task Badger's monitor header (ignored here, whatever it holds), and in a batch any operation, which fails
# alone in its own result while the request is answered 200 (docs/server.md)
[[operations]]
include-operation-id = ["task_create", "task_update", "task_partial_update", "task_batch"]
checks.negative_data_rejection.expected-statuses = [200, 201, 400, 401, 403, 404, 405, 406, 409, 415, 422, 428, 429]
"""


@pytest.mark.postgres
@pytest.mark.load  # the suite's longest test: started first, so that the rest runs beside it
@pytest.mark.timeout(150)
def test_every_schemathesis_check_passes_against_the_served_schema(served: Served, tmp_path: Path) -> None:
    headers = {"Authorization": f"Token {served.token}"}
    tasks_url = f"{served.url}/api/{ORGANIZATION}/{PROJECT}/tasks/"
    task = web.post(tasks_url, json={"name": "seed"}, headers=headers).raise_for_status().json()
    action = web.post(f"{task['url']}actions/", headers=headers,
                        json={"trigger": "success", "integration": "email", "config": {"to": "ops@example.com"}})
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(task["id"], action.raise_for_status().json()["id"]))
    run = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(config), "run", f"{served.url}/api/schema/?format=json",
         "--checks", "all", "--exclude-checks", NOT_THIS_API, "--header", f"Authorization: Token {served.token}",
         # bounded by work, not time: a few examples per operation and phase, a repeatable seed
         "--max-examples", "6", "--seed", "20260", "--no-shrink", "--workers", "1", "--max-failures", "20",
         "--request-timeout", "10"],
        capture_output=True, text=True, timeout=140, check=False, cwd=tmp_path,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-12000:]
    assert re.search(r"Tested: 13\b", output), output[-3000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ {phase}\b", output), f"{phase} did not run and pass:\n{output[-3000:]}"
    generated = re.search(r"(\d+) generated", output)
    assert generated and int(generated.group(1)) >= 200, output[-3000:]


@pytest.mark.postgres
def test_nul_in_an_id_a_slug_or_a_filter_is_invalid_input_not_a_server_error(served: Served) -> None:
    """PostgreSQL text can not hold NUL: a request that put one in a lookup used to fail the query (a 500,
    which a client retries as the server's fault). It is refused as the invalid input it is, as it is in a
    body, in the documented error shape."""
    headers = {"Authorization": f"Token {served.token}"}
    api = f"{served.url}/api"
    tasks = f"{api}/{ORGANIZATION}/{PROJECT}/tasks/"
    with web.client(headers=headers, timeout=10) as http:
        answers = {
            "task id": http.get(f"{tasks}%00/"),
            "task id (update)": http.patch(f"{tasks}%00/", json={"value": 1}),
            "task id (cancel)": http.delete(f"{tasks}%00/"),
            "task id (actions)": http.get(f"{tasks}a%00b/actions/"),
            "project slug": http.get(f"{api}/{ORGANIZATION}/def%00ault/tasks/"),
            **{f"{name} filter": http.get(tasks, params={name: value}) for name, value in
               (("name", "a\x00"), ("external_id", "\x00"), ("ref", "\x00"), ("parent", "\x00"), ("tag", "a:\x00"))},
            "username": web.post(f"{api}/authenticate/", json={"username": "a\x00", "password": "x"}),
        }
        batch = http.post(f"{tasks}batch/", json={"operations": [{"op": "update", "id": "\x00", "fields": {}}]})
    for what, answer in answers.items():
        assert answer.status_code == 400, (what, answer.status_code, answer.text)
        assert answer.json()["errors"][0]["code"] == "null_characters_not_allowed", (what, answer.text)
    assert batch.status_code == 200, batch.text
    assert [r["status"] for r in batch.json()["results"]] == [400], batch.text
