"""taskreport.testing: capture_tasks() records what code reported, in memory, and puts the process's client
back; the pytest plugin gives the same recorder as the ``taskreport_tasks`` fixture, fresh for each test."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import taskreport
from taskreport import Status, ValidationError
from taskreport._client import current_client
from taskreport.integrations.logging import LoggingIntegration
from taskreport.testing import capture_tasks

ROOT = Path(__file__).resolve().parent.parent


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def test_the_tasks_that_ended_in_the_order_they_ended_with_what_they_reported() -> None:
    with capture_tasks() as tasks:
        with taskreport.task("outer", tags={"team": "data"}, data={"source": "s3"}) as outer:
            outer.update(value=3, value_max=10)
            with taskreport.task("inner"):
                pass
        with pytest.raises(ValueError), taskreport.task("failing"):
            raise ValueError("boom")
        assert [(t.name, t.status) for t in tasks] == [
            ("inner", Status.SUCCESS), ("outer", Status.SUCCESS), ("failing", Status.ERROR)]
    outer_record, inner_record, failing = tasks.get("outer"), tasks.get("inner"), tasks.get("failing")
    assert (outer_record.value, outer_record.value_max, outer_record.tags) == (3, 10, {"team": "data"})
    assert outer_record.data == {"source": "s3"}
    assert inner_record.parent == outer_record.id and outer_record.parent is None
    assert failing.data["exception"] == "builtins.ValueError" and failing.data["message"] == "boom"
    assert tasks.children("outer") == [inner_record]
    assert outer_record.ref == outer.ref


def test_running_tasks_are_in_all_but_not_among_the_ended() -> None:
    with capture_tasks() as tasks:
        running = taskreport.Task.create("running", status="processing")
        running.update(value=5)
        done = taskreport.Task.create("done")
        done.success()
        assert [t.name for t in tasks] == ["done"]
        assert [(t.name, t.status, t.value) for t in tasks.all()] == [
            ("running", Status.PROCESSING, 5), ("done", Status.SUCCESS, None)]
        assert tasks.get(running).status == Status.PROCESSING
        running.success()
        assert [t.name for t in tasks] == ["done", "running"]


def test_get_says_what_was_recorded_when_the_task_is_missing_or_ambiguous() -> None:
    with capture_tasks() as tasks:
        taskreport.Task.create("a").success()
        taskreport.Task.create("a").success()
        with pytest.raises(AssertionError, match=r"expected one a task named 'b', found 0; recorded: 'a', 'a'"):
            tasks.get("b")
        with pytest.raises(AssertionError, match="found 2"):
            tasks.get("a")
        assert len(tasks.named("a")) == 2


def test_a_task_that_ends_again_after_a_retry_moves_to_the_end() -> None:
    with capture_tasks() as tasks:
        first, second = taskreport.Task.create("first"), taskreport.Task.create("second")
        first.error(data={"attempt": 1})
        tasks.flush()  # the first end reaches the recorder before the task is retried
        first.pending()
        second.success()
        first.success()
        assert [(t.name, t.status) for t in tasks] == [("second", Status.SUCCESS), ("first", Status.SUCCESS)]


def test_actions_and_attached_handles_reach_the_recorder() -> None:
    with capture_tasks() as tasks:
        made = taskreport.Task.create("made", status="processing")
        made.add_action("success", "webhook:hook", {"url": "https://example.com"})
        taskreport.Task.attach(made.ref).update(value=7)
        taskreport.Task.attach(made.ref).success()
        record = tasks.get("made")
        assert (record.status, record.value) == (Status.SUCCESS, 7)
        assert [(a.trigger, a.integration, a.config) for a in tasks.actions(record)] == [
            ("success", "webhook:hook", {"url": "https://example.com"})]


def test_what_is_recorded_is_what_a_service_would_store_not_the_callers_objects() -> None:
    payload = {"items": (1, 2), "nested": {"k": "v"}}
    with capture_tasks() as tasks:
        task = taskreport.Task.create("snap", data=payload)
        task.success()
        record = tasks.get("snap")
    payload["nested"]["k"] = "changed later"
    assert record.data == {"items": [1, 2], "nested": {"k": "v"}}
    assert tasks.get("snap").data == {"items": [1, 2], "nested": {"k": "v"}}


def test_no_thread_no_file_no_network_and_the_previous_client_comes_back(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # were anything to reach a real client, it would go to an HTTP server that does not exist
    monkeypatch.setenv("TASKREPORT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("TASKREPORT_TOKEN", "t")
    previous = taskreport.init(flush_interval=0.05)
    threads = set(threading.enumerate())
    with capture_tasks() as tasks:
        for i in range(50):
            with taskreport.task(f"t{i}", heartbeat=0.01) as t:
                t.update(value=i)
        assert len(tasks) == 50
        # no thread started (one that an earlier test left, like a proxy's request thread, may end meanwhile)
        assert set(threading.enumerate()) - threads == set()
        assert current_client() is not previous
    assert current_client() is previous
    assert previous.stats()["requests"] == 0 and previous.stats()["merged"] == 0
    assert files_under(isolated) == []
    assert len(tasks) == 50  # still readable afterwards


def test_the_previous_client_comes_back_after_an_exception_and_captures_nest() -> None:
    previous = taskreport.init()
    with pytest.raises(RuntimeError), capture_tasks() as outer:
        taskreport.Task.create("in outer").success()
        with capture_tasks() as inner:
            taskreport.Task.create("in inner").success()
        taskreport.Task.create("in outer again").success()
        raise RuntimeError("the test failed")
    assert current_client() is previous
    assert [t.name for t in outer] == ["in outer", "in outer again"]
    assert [t.name for t in inner] == ["in inner"]


def test_settings_that_shape_what_is_reported_follow_the_client_in_place() -> None:
    def hide_secrets(fields: dict[str, object]) -> dict[str, object] | None:
        return None if str(fields["name"]).startswith("secret") else fields

    taskreport.init(tags={"env": "prod"}, before_create=hide_secrets, integrations=[LoggingIntegration()])
    with capture_tasks() as tasks:
        assert tasks.client.integration(LoggingIntegration) is not None
        taskreport.Task.create("public").success()
        taskreport.Task.create("secret-job").success()
    assert [(t.name, t.tags) for t in tasks] == [("public", {"env": "prod"})]
    with capture_tasks(tags={}, integrations=[]) as tasks:
        assert tasks.client.integration(LoggingIntegration) is None
        taskreport.Task.create("public").success()
    assert tasks.get("public").tags == {}


def test_strict_makes_bad_fields_raise_where_they_are_written() -> None:
    with capture_tasks(strict=True):
        task = taskreport.Task.create("strict")
        with pytest.raises(ValidationError) as raised:
            task.update(value=-1)
        assert raised.value.attr == "value"
    with capture_tasks() as tasks:
        task = taskreport.Task.create("lenient")
        task.update(value=-1)  # logged and dropped, as in production
        task.success()
    assert tasks.get("lenient").value is None


def test_it_records_even_when_reporting_is_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKREPORT_DISABLED", "1")
    taskreport.init()
    with capture_tasks() as tasks:
        taskreport.Task.create("recorded").success()
    assert [t.name for t in tasks] == ["recorded"]


def test_tasks_from_threads_and_asyncio_tasks() -> None:
    @taskreport.track
    async def fetch(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @taskreport.track(name="crawl")
    async def crawl() -> list[int]:
        return list(await asyncio.gather(*(fetch(i) for i in range(5))))

    def work(i: int) -> None:
        with taskreport.task(f"thread-{i}") as t:
            t.update(value=i)

    with capture_tasks() as tasks:
        assert asyncio.run(crawl()) == [0, 1, 2, 3, 4]
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    crawl_record = tasks.get("crawl")
    fetches = [t for t in tasks if t.name.endswith("fetch")]
    assert len(fetches) == 5 and {t.parent for t in fetches} == {crawl_record.id}
    assert sorted(t.value or 0 for t in tasks if t.name.startswith("thread-")) == list(range(8))


def test_clear_forgets_what_was_recorded() -> None:
    with capture_tasks() as tasks:
        taskreport.Task.create("before").success()
        tasks.clear()
        taskreport.Task.create("after").success()
        assert [t.name for t in tasks] == ["after"]


def test_the_fixture_is_fresh_for_each_test_and_leaves_the_process_client_alone(taskreport_tasks) -> None:  # type: ignore[no-untyped-def]
    before = current_client()
    assert len(taskreport_tasks) == 0 and taskreport_tasks.client is before
    with taskreport.task("from the fixture"):
        pass
    assert [t.name for t in taskreport_tasks] == ["from the fixture"]


# -- the plugin, as a user's suite sees it ---------------------------------------------------------------
USER_SUITE = '''
import sys

import taskreport


def import_items(items):
    with taskreport.task("import", value_max=len(items)) as task:
        for item in items:
            task.increment()


def test_reports_progress(taskreport_tasks):
    import_items(["a", "b"])
    [job] = taskreport_tasks
    assert (job.name, job.status, job.value) == ("import", "success", 2)


def test_each_test_starts_empty(taskreport_tasks):
    assert list(taskreport_tasks) == []
    import_items(["c"])
    assert len(taskreport_tasks) == 1
'''


def run_pytest(directory: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=directory, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKREPORT_", "PYTEST_"))}
    env["TASKREPORT_HOME"] = str(tmp_path / "user-home")
    env["TASKREPORT_CONFIG"] = str(tmp_path / "user-config.toml")
    return env


def test_the_plugin_gives_users_the_fixture_and_never_touches_their_store(tmp_path: Path,
                                                                          user_env: dict[str, str]) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_user.py").write_text(USER_SUITE)
    done = run_pytest(suite, env=user_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    assert files_under(tmp_path / "user-home") == []


def test_the_plugin_imports_nothing_for_a_suite_that_does_not_use_it(tmp_path: Path,
                                                                    user_env: dict[str, str]) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_plain.py").write_text(textwrap.dedent("""
        import sys

        def test_taskreport_was_not_imported(request):
            assert request.config.pluginmanager.has_plugin("taskreport")
            assert "taskreport" not in sys.modules
    """))
    done = run_pytest(suite, env=user_env)
    assert done.returncode == 0, done.stdout + done.stderr
    # and with plugin autoloading off, -p loads it by its module name
    user_env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    (suite / "test_user.py").write_text(USER_SUITE)
    done = run_pytest(suite, "-p", "_taskreport_pytest", "test_user.py", env=user_env)
    assert done.returncode == 0, done.stdout + done.stderr
