"""End to end: ``taskreport watch`` (and the prompts of ``login`` and ``configure``) in a real pseudo-terminal,
against a real server and on the embedded store. What is checked is the screen a person would see."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _terminal import Terminal
from faultproxy import FaultProxy
from server_fixtures import LiveServer, start_server

import taskreport
from taskreport._config import read_config_file

TASKREPORT = str(Path(os.sys.executable).parent / "taskreport")


@dataclass
class Where:
    """Where the test reports to, and the environment that points the CLI there too."""

    env: dict[str, str]
    live: LiveServer | None = None

    def init(self, url: str | None = None) -> None:
        if self.live is None:
            taskreport.init()
        else:
            taskreport.init(url=url or self.live.url, token=self.live.token, organization=self.live.organization,
                            project=self.live.project)


def _base_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if (not k.startswith("TASKREPORT_") or k == "TASKREPORT_SCRYPT_N") and k not in ("NO_COLOR",)
    }
    env.update(TASKREPORT_HOME=str(tmp_path / "home"), TASKREPORT_CONFIG=str(tmp_path / "config.toml"),
               TERM="xterm-256color", LANG="C.UTF-8", PYTHONIOENCODING="utf-8")
    return env


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in [k for k in os.environ if k.startswith("TASKREPORT_") and k != "TASKREPORT_SCRYPT_N"]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("TASKREPORT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TASKREPORT_CONFIG", str(tmp_path / "config.toml"))
    yield
    taskreport.shutdown(2)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live, stop = start_server(str(tmp_path / "server.db"))
    yield live
    stop()


@pytest.fixture(params=["http", "embedded"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    env = _base_env(tmp_path)
    if request.param == "embedded":
        return Where(env)
    live: LiveServer = request.getfixturevalue("server")
    env.update(TASKREPORT_URL=live.url, TASKREPORT_TOKEN=live.token, TASKREPORT_ORG=live.organization,
               TASKREPORT_PROJECT=live.project)
    return Where(env, live)


def row(screen: list[str], name: str) -> str:
    found = [line for line in screen if line.lstrip("├└ ").startswith(name)]
    return found[0] if found else ""


def test_watch_draws_bars_then_exits_0(where: Where) -> None:
    where.init()
    export = taskreport.Task.create("export customers", status="processing", value=0, value_max=200)
    resize = taskreport.Task.create("resize images", status="processing", value=0, value_max=40)
    step = taskreport.Task.create("upload", parent=export, status="processing", value=1, value_max=4)
    assert taskreport.flush(5)
    with Terminal([TASKREPORT, "watch", str(export.id), str(resize.id), "--interval", "0.1"], where.env,
                  columns=110, lines=12) as term:
        term.wait_for(lambda s: "export customers" in row(s, "export customers"))
        for i in range(1, 6):
            export.update(value=i * 20)
            resize.update(value=i * 4)
            assert taskreport.flush(5)
            time.sleep(0.25)
        screen = term.wait_for(lambda s: " 50% " in row(s, "export customers") and " 50% " in row(s, "resize"))
        line = row(screen, "export customers")
        assert "██████" in line and "░" in line and "100/200" in line and "/s" in line and "ETA" in line
        assert line.endswith("processing")
        assert row(screen, "upload").startswith("└ upload") and "1/4" in row(screen, "upload")
        assert "2 task(s), 2 running" in screen[3]
        step.success()
        export.update(value=200)
        export.success()
        resize.update(value=40)
        resize.success()
        assert taskreport.flush(5)
        code = term.wait()
        screen = term.text
    assert code == 0, term.stderr()
    assert row(screen, "export customers").endswith("success") and "100% 200/200" in row(screen, "export customers")
    assert "took 0:0" in row(screen, "export customers")
    assert "all 2 watched task(s) succeeded" in screen
    # the cursor was hidden while drawing and shown again
    assert b"\x1b[?25l" in term.output and term.output.rfind(b"\x1b[?25h") > term.output.rfind(b"\x1b[?25l")


def test_watch_exits_1_when_a_task_fails(where: Where) -> None:
    where.init()
    ok = taskreport.Task.create("fine", status="processing", value=1, value_max=2)
    bad = taskreport.Task.create("doomed", status="processing", value=1, value_max=2)
    assert taskreport.flush(5)
    with Terminal([TASKREPORT, "watch", "--interval", "0.1"], where.env, columns=100, lines=10) as term:
        term.wait_for(lambda s: "doomed" in row(s, "doomed") and "fine" in row(s, "fine"))
        ok.success()
        bad.error(RuntimeError("disk full"))
        assert taskreport.flush(5)
        code = term.wait()
        stderr = term.stderr()
    assert code == 1
    assert row(term.text, "doomed").endswith("error") and row(term.text, "fine").endswith("success")
    assert stderr.strip() == f"taskreport: 1 of 2 watched task(s) did not succeed: doomed ({bad.id}) error"


def test_ctrl_c_stops_watching_and_restores_the_cursor(where: Where) -> None:
    where.init()
    task = taskreport.Task.create("endless", status="processing", value=3, value_max=10)
    assert taskreport.flush(5)
    with Terminal([TASKREPORT, "watch", str(task.id), "--interval", "0.1"], where.env) as term:
        term.wait_for(lambda s: " 30% " in row(s, "endless"))
        term.interrupt()
        code = term.wait()
        stderr = term.stderr()
    assert code == 130
    assert stderr.strip() == "taskreport: interrupted"
    assert term.output.endswith(b"\x1b[?25h") or term.output.rfind(b"\x1b[?25h") > term.output.rfind(b"\x1b[?25l")


def test_watch_rides_out_the_service_going_away(server: LiveServer, tmp_path: Path) -> None:
    proxy = FaultProxy(server.url)
    try:
        where = Where(_base_env(tmp_path), server)
        where.env.update(TASKREPORT_URL=proxy.url, TASKREPORT_TOKEN=server.token, TASKREPORT_ORG="acme",
                         TASKREPORT_PROJECT="web")
        where.init()
        task = taskreport.Task.create("migration", status="processing", value=1, value_max=4)
        assert taskreport.flush(5)
        with Terminal([TASKREPORT, "watch", str(task.id), "--interval", "0.1"], where.env, lines=8) as term:
            term.wait_for(lambda s: " 25% " in row(s, "migration"))
            proxy.stop()
            refused = f"trying again: cannot reach the task service at {proxy.url}: connection refused"
            screen = term.wait_for(lambda s: any(line.startswith(refused) for line in s))
            assert " 25% " in row(screen, "migration")  # the last known state stays on screen
            proxy.start()
            term.wait_for(lambda s: "1 task(s), 1 running" in "\n".join(s))
            task.success(value=4)
            assert taskreport.flush(5)
            assert term.wait() == 0
    finally:
        proxy.close()


def test_a_narrow_terminal_gets_lines_that_do_not_wrap(where: Where) -> None:
    where.init()
    tasks = [taskreport.Task.create(f"task with a rather long name number {i}", status="processing", value=i,
                                    value_max=10) for i in range(3)]
    assert taskreport.flush(5)
    with Terminal([TASKREPORT, "watch", "--interval", "0.1"], where.env, columns=40, lines=10) as term:
        screen = term.wait_for(lambda s: sum(line.startswith("task wi") for line in s) == 3)
        assert all(len(line) <= 39 for line in screen)
        # three rows and the footer, drawn in place: nothing scrolled off or drawn twice
        assert [line for line in screen if line][3].startswith("3 task(s)")
        for t in tasks:
            t.success()
        assert taskreport.flush(5)
        assert term.wait() == 0


def test_more_tasks_than_lines_are_summarised(where: Where) -> None:
    where.init()
    for i in range(12):
        taskreport.Task.create(f"job {i:02d}", status="processing", value=i, value_max=12)
    assert taskreport.flush(5)
    with Terminal([TASKREPORT, "watch", "--interval", "0.1"], where.env, columns=100, lines=8) as term:
        screen = term.wait_for(lambda s: any("more line(s)" in line for line in s))
        assert sum(line.startswith("job ") for line in screen) == 5
        assert "… 7 more line(s)" in screen[5]
        term.interrupt()
        assert term.wait() == 130


def test_watch_plain_lines_when_not_a_terminal(where: Where) -> None:
    where.init()
    task = taskreport.Task.create("nightly", status="processing", value=0, value_max=10)
    assert taskreport.flush(5)
    process = subprocess.Popen([TASKREPORT, "watch", str(task.id), "--interval", "0.1"], env=where.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    first = process.stdout.readline()  # watch has seen the task running
    task.update(value=10)
    task.success()
    assert taskreport.flush(5)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    out = first + out
    assert "\x1b" not in out
    lines = out.splitlines()
    assert lines[0].endswith(f"{task.id}  nightly  processing  0/10 (0%)")
    assert f"{task.id}  nightly  success  10/10 (100%)" in lines[1]
    assert lines[2] == "1 watched task(s) succeeded"


# -- prompts in a terminal: login and configure ---------------------------------------------------------------------
def test_login_asks_in_the_terminal_and_never_echoes_the_password(server: LiveServer, tmp_path: Path) -> None:
    server.create_user("ada", "s3cret-pass-word")
    env = _base_env(tmp_path)
    with Terminal([TASKREPORT, "login", server.url, "--project", "web"], env, stderr_to_pipe=False) as term:
        term.wait_for(lambda s: any(line.startswith("Username:") for line in s))
        term.send("ada\r")
        term.wait_for(lambda s: any(line.startswith("Password:") for line in s))
        term.send("s3cret-pass-word\r")
        assert term.wait() == 0
    screen = "\n".join(term.text)
    assert "Logged in to" in screen and "s3cret-pass-word" not in screen
    assert b"s3cret-pass-word" not in term.output
    token = read_config_file(tmp_path / "config.toml")["token"]
    assert token.encode() not in term.output


def test_configure_asks_with_the_current_values_and_hides_the_token(tmp_path: Path) -> None:
    env = _base_env(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text('# mine\nurl = "https://tasks.example.com"\ntoken = "trk_old_0123456789abcdef"\n')
    with Terminal([TASKREPORT, "configure"], env, stderr_to_pipe=False) as term:
        term.wait_for(lambda s: any("[https://tasks.example.com]:" in line for line in s))
        term.send("\r")  # keep the url
        term.wait_for(lambda s: any(line.startswith("Organization") for line in s))
        term.send("acme\r")
        term.wait_for(lambda s: any(line.startswith("Project") for line in s))
        term.send("web\r")
        screen = term.wait_for(lambda s: any(line.startswith("Token") for line in s))
        assert any("Enter keeps trk_…cdef" in line for line in screen)
        term.send("trk_new_fedcba9876543210\r")
        assert term.wait() == 0
    assert b"trk_new_fedcba9876543210" not in term.output and b"trk_old_0123456789abcdef" not in term.output
    assert read_config_file(config) == {"url": "https://tasks.example.com", "token": "trk_new_fedcba9876543210",
                                        "organization": "acme", "project": "web"}
    assert config.read_text().startswith("# mine\n")


@pytest.mark.load  # ten seconds of a real terminal: started first, not left to end the suite alone
def test_the_docs_recording_script_still_records(tmp_path: Path) -> None:
    """``record_watch.py`` makes docs/img/watch.svg: it must keep working as watch changes."""
    import xml.etree.ElementTree as ET

    out = tmp_path / "watch.svg"
    env = {k: v for k, v in os.environ.items() if (not k.startswith("TASKREPORT_") or k == "TASKREPORT_SCRYPT_N")}
    done = subprocess.run([os.sys.executable, str(Path(__file__).parent / "record_watch.py"), str(out)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    root = ET.parse(out).getroot()
    frames = root.findall("{http://www.w3.org/2000/svg}g")
    assert len(frames) >= 5
    text = "".join(root.itertext())
    assert "█" in text and "import customers" in text and "success" in text and "ETA" in text
    assert "did not succeed: send newsletter" in done.stdout
