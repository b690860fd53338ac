"""``taskreport login``, ``logout``, ``configure`` and ``config show``: the settings in the config file.

The token is never printed, nor echoed while typed: it is shown masked, and named by where it came from.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
from typing import Any

import click

from ._group import ReportingGroup, transport_reason
from ._settings import Settings, settings_of, url_problem

_KEYS = ("url", "organization", "project", "token")


def mask(token: str | None) -> str:
    """Enough of a token to tell two apart, never enough to use: ``trk_…9f3a``."""
    if not token:
        return "-"
    if len(token) < 16:
        return "****"
    head = token[:4] if token[3:4] == "_" else ""
    return f"{head}…{token[-4:]}"


def _check_url(url: str, option: str) -> str:
    problem = url_problem(url)
    if problem:
        raise click.BadParameter(problem, param_hint=f"'{option}'")
    return url.rstrip("/")


def _overridden(keys: tuple[str, ...]) -> None:
    """Tell when the environment wins over what was just saved."""
    from .._config import ENV

    for key in keys:
        if os.environ.get(ENV[key]):
            click.echo(f"note: {ENV[key]} is set and wins over the config file's {key}", err=True)


def _save(values: dict[str, Any]) -> str:
    from .._config import write_config_file

    return str(write_config_file(values))


def _read_secret(prompt: str, from_stdin: bool, option: str) -> str:
    if from_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        secret = click.prompt(prompt, hide_input=True, default="", show_default=False)
    else:
        raise click.UsageError(f"no terminal to ask for the {prompt.lower()}: pipe it in with {option}")
    if not secret:
        raise click.UsageError(f"the {prompt.lower()} is empty")
    return secret


# -- login / logout --------------------------------------------------------------------------------------------
@click.command()
@click.argument("url", required=False)
@click.option("--username", "-u", help="[default: asked]")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (for scripts).")
@click.option("--org", "organization", metavar="ORG", help="Organization to use [default: the user's first].")
@click.option("--project", metavar="PROJECT", help="Project to use [default: the saved one, else 'default'].")
@click.pass_context
def login(
    ctx: click.Context,
    url: str | None,
    username: str | None,
    password_stdin: bool,
    organization: str | None,
    project: str | None,
) -> None:
    """Log in to a task service and save the token.

    Asks for a username and password, gets a token from the service (POST /api/authenticate/) and saves it
    with the URL, organization and project in the config file (readable by you only).
    """
    settings = settings_of(ctx)
    if url is not None:
        url = _check_url(url, "URL")
    else:
        if settings.config.url is None or settings.config.embedded:
            raise click.UsageError("give the task service's URL: taskreport login https://tasks.example.com")
        settings.check_url()
        url = str(settings.config.url)
    _refuse_cleartext(url)
    if username is None:
        if not sys.stdin.isatty():
            raise click.UsageError("no terminal to ask for the username: give --username")
        username = click.prompt("Username")
    password = _read_secret("Password", password_stdin, "--password-stdin")
    body = _authenticate(url, username, password)
    accounts = [str(a) for a in body.get("accounts") or [body.get("account")] if a]
    token = body.get("token")
    if not isinstance(token, str) or not token or not accounts:
        raise click.ClickException(f"{url} answered the login without a token: is it a task service?")
    saved = settings.config
    if organization is None:
        organization = saved.organization if saved.organization in accounts else accounts[0]
    elif organization not in accounts:
        raise click.BadParameter(
            f"{username!r} is not in organization {organization!r} (theirs: {', '.join(accounts)})",
            param_hint="'--org'",
        )
    chosen = project is not None
    if project is None:
        project_set = saved.sources.get("project", "default") != "default"
        org_fits = saved.organization == organization or saved.sources.get("organization", "default") == "default"
        project = saved.project if project_set and org_fits else "default"
    found = _project_exists(url, token, organization, project)
    if not found and chosen:
        raise click.ClickException(
            f"logged in, but organization {organization!r} has no project {project!r} at {url} (nothing was saved)"
        )
    path = _save({"url": url, "token": token, "organization": organization, "project": project})
    click.echo(f"Logged in to {url} as {username} (organization {organization}, project {project}).")
    click.echo(f"Token saved to {path}.")
    if not found:
        click.echo(
            f"note: organization {organization!r} has no project {project!r}: choose one with "
            "'taskreport configure --project NAME'",
            err=True,
        )
    _overridden(_KEYS)


def _refuse_cleartext(url: str) -> None:
    from .._config import _truthy
    from .._http import is_loopback

    parts = urllib.parse.urlsplit(url)
    allowed = _truthy(os.environ.get("TASKREPORT_ALLOW_INSECURE_HTTP"))
    if parts.scheme == "http" and not is_loopback(parts.hostname or "") and not allowed:
        raise click.ClickException(
            f"refusing to send a password over plain HTTP to {parts.hostname}: use https:// (or set "
            "TASKREPORT_ALLOW_INSECURE_HTTP=1 if you really mean it)"
        )


def _request(method: str, url: str, base: str, body: Any = None, token: str | None = None) -> Any:
    import json

    from .._wire import WireError, client_headers, default_wire

    sent = client_headers(token)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    wire = default_wire()
    try:
        return wire.request(method, url, data, sent, 10.0)
    except WireError as exc:
        raise click.ClickException(f"cannot reach the task service at {base}: {transport_reason(exc)}") from None
    finally:
        wire.close()


def _detail(response: Any) -> str:
    try:
        errors = response.json().get("errors") or []
        return str(errors[0].get("detail") or "")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


def _authenticate(url: str, username: str, password: str) -> dict[str, Any]:
    endpoint = f"{url}/api/authenticate/"
    response = _request("POST", endpoint, url, body={"username": username, "password": password})
    if response.status_code in (400, 401, 403):
        raise click.ClickException(f"{url} refused the login: {_detail(response) or 'wrong username or password'}")
    if response.status_code == 429:
        wait = response.headers.get("Retry-After")
        raise click.ClickException(f"{url} is limiting logins{f'; retry in {wait} s' if wait else ''}")
    if response.status_code == 404:
        raise click.ClickException(f"{endpoint} does not exist: is {url} a task service?")
    if response.status_code != 200:
        raise click.ClickException(f"{url} failed the login ({response.status_code}): {_detail(response)}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise click.ClickException(f"{url} answered the login with something else than JSON: is it a task service?")
    return body


def _project_exists(url: str, token: str, organization: str, project: str) -> bool:
    quote = urllib.parse.quote
    tasks = f"{url}/api/{quote(organization, safe='')}/{quote(project, safe='')}/tasks/"
    response = _request("GET", f"{tasks}?page_size=1", url, token=token)
    return bool(response.status_code != 404)


@click.command()
def logout() -> None:
    """Remove the saved token.

    The URL, organization and project stay. The token itself stays valid on the server until it is revoked
    there ('taskreport admin revoke-token' on our server).
    """
    from .._config import config_path, read_config_file

    path = config_path()
    if not read_config_file(path).get("token"):
        click.echo(f"no token saved in {path}", err=True)
    else:
        _save({"token": None})
        click.echo(f"Removed the token from {path}.")
    _overridden(("token",))


# -- configure -------------------------------------------------------------------------------------------------
@click.command()
@click.option("--url", metavar="URL", help="The task service's URL; '' for the embedded store.")
@click.option("--org", "organization", metavar="ORG", help="Organization slug.")
@click.option("--project", metavar="PROJECT", help="Project slug.")
@click.option("--token-stdin", is_flag=True, help="Read the token (or project key) from standard input.")
@click.option(
    "--unset", multiple=True, type=click.Choice(_KEYS), help="Remove a setting from the config file (repeatable)."
)
def configure(
    url: str | None, organization: str | None, project: str | None, token_stdin: bool, unset: tuple[str, ...]
) -> None:
    """Set the url, organization, project or token.

    With no option, in a terminal, asks for each (Enter keeps the current value; the token is not echoed).
    Only what is given changes: the rest of the config file, comments included, stays.
    """
    from .._config import config_path, read_config_file

    path = config_path()
    current = read_config_file(path)
    values: dict[str, Any] = dict.fromkeys(unset)
    if url is not None:
        values["url"] = _check_url(url, "--url") if url else None
    if organization is not None:
        values["organization"] = organization or None
    if project is not None:
        values["project"] = project or None
    if token_stdin:
        values["token"] = _read_secret("Token", True, "--token-stdin").strip()
    if not values:
        if not sys.stdin.isatty():
            raise click.UsageError(
                "nothing to set: give --url, --org, --project, --token-stdin or --unset (or run it in a terminal "
                "to be asked)"
            )
        values = _ask(current)
    changed = {k: v for k, v in values.items() if current.get(k) != v}
    if not changed:
        click.echo(f"Nothing changed in {path}.")
        return
    _save(changed)
    names = ", ".join(k for k in _KEYS if k in changed)
    click.echo(f"Saved {names} to {path}.")
    _overridden(tuple(changed))


def _ask(current: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    url = click.prompt("URL ('' for the embedded store)", default=str(current.get("url") or ""), show_default=True)
    values["url"] = _check_url(url, "URL") if url else None
    for key, label in (("organization", "Organization"), ("project", "Project")):
        answer = click.prompt(label, default=str(current.get(key) or ""), show_default=True)
        values[key] = answer or None
    keep = f"Enter keeps {mask(current.get('token'))}" if current.get("token") else "Enter for none"
    token = click.prompt(f"Token ({keep}, '-' removes it)", hide_input=True, default="", show_default=False)
    if token == "-":
        values["token"] = None
    elif token:
        values["token"] = token.strip()
    return values


# -- config show -----------------------------------------------------------------------------------------------
@click.group(cls=ReportingGroup, invoke_without_command=True)
@click.pass_context
def config(ctx: click.Context) -> None:
    """Show the settings and where each came from.

    'taskreport config' is 'taskreport config show'.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(show)


@config.command()
@click.option("--json", "as_json", is_flag=True, help="As JSON (the token masked all the same).")
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """Show the settings in effect, and where each came from (the token masked)."""
    from .._config import config_path

    settings: Settings = settings_of(ctx)
    resolved = settings.config
    rows = {
        "url": resolved.url if resolved.url else f"(none: the embedded store {resolved.store_url})",
        "organization": resolved.organization,
        "project": resolved.project,
        "token": mask(resolved.token),
    }
    sources = {key: settings.source(key) for key in rows}
    for key, source in sources.items():
        if source.startswith("the config file "):
            source = "config file"
        sources[key] = source.replace("the default", "default")
    path = str(config_path())
    if as_json:
        body = {"config_file": path, **{k: {"value": v, "source": sources[k]} for k, v in rows.items()}}
        click.echo(json.dumps(body, indent=2))
        return
    exists = os.path.exists(path)
    click.echo(f"{'config file'.ljust(12)}  {path}{'' if exists else ' (not there yet)'}")
    width = max(len(v) for v in rows.values())
    for key, value in rows.items():
        click.echo(f"{key.ljust(12)}  {value.ljust(width)}  {sources[key]}")
