"""``taskreport serve``: run the task service on this machine."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import secrets
import socket
import sys
from typing import Any

import click

from .._config import (
    DEFAULT_PROJECT,
    LOCAL_ORGANIZATION,
    Config,
    config_path,
    read_config_file,
    write_config_file,
)
from .._errors import ConfigurationError
from .._http import is_loopback

_WILDCARDS = ("0.0.0.0", "::", "")


def default_db() -> str:
    # the embedded store, so that the server serves what the library wrote before there was a server
    return Config().store_url


def check_bind(host: str, tls: bool, allow_http: bool) -> None:
    if not tls and not allow_http and not is_loopback(host):
        raise click.UsageError(
            f"refusing to serve plain HTTP on {host!r}: API tokens would cross the network in clear text. "
            "Give --certfile and --keyfile, or --allow-http (behind a TLS-terminating proxy)."
        )


def local_url(host: str, port: int, tls: bool) -> str:
    """Where a client on this machine reaches the server."""
    name = "127.0.0.1" if host in _WILDCARDS else host
    try:
        if ipaddress.ip_address(name).version == 6:
            name = f"[{name}]"
    except ValueError:
        pass
    return f"{'https' if tls else 'http'}://{name}:{port}"


def bootstrap(
    store: Any, organization: str, project: str, username: str, password: str | None
) -> dict[str, str] | None:
    """On a database without any token: create the organization, project, a user and a token for them.

    Returns what was created (with the token and, if generated, the password), or None when the database
    already had tokens.
    """
    with store.transaction() as tx:
        if tx.has_tokens():
            return None
        tx.ensure_project(organization, project)
        made = {"organization": organization, "project": project, "username": username}
        if password is None:
            password = secrets.token_urlsafe(18)
            made["password"] = password
        user_id = tx.create_user(username, password, organization)
        made["token"] = tx.create_token(organization, user_id=user_id, name="serve")
    return made


#: each of several server processes listens on a socket of its own on the one port, and the kernel spreads the
#: connections over them. One shared socket lets whichever process accepts first take every connection that
#: waits (a client opening its keep-alive connections at once put all of them on one process). Linux only:
#: elsewhere SO_REUSEPORT does not spread connections.
SPREAD_CONNECTIONS = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # uvicorn writes a response's headers and body separately; without this the body waits for the
    # client's delayed ACK (~40 ms on Linux) on every keep-alive request
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def listen_on(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The bound socket, or one line saying why not (a busy port names the address and the way out)."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        return bind_socket(host, port, reuse_port=reuse_port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(
                f"{shown} is already in use: stop what is using it, or choose another port with --port"
            ) from None
        reason = exc.strerror or str(exc)
        raise click.ClickException(f"cannot listen on {shown}: {reason}") from None


def update_config(url: str, values: dict[str, str], write: bool | None) -> str:
    """Point this machine's config file at the server, as ``--write-config`` says (None: only if it does not
    point elsewhere already). Returns the line to print."""
    if write is False:
        return ""
    try:
        current = read_config_file().get("url")
    except ConfigurationError as exc:
        return f"  this machine's config file was left alone: {exc}"
    if write is None and current not in (None, url):
        return (
            f"  this machine's config ({config_path()}) points at {current}: left as it is "
            "(--write-config points it here)"
        )
    path = write_config_file({"url": url, **values})
    return f"  this machine's CLI and library now report to {url} ({path})"


def run_server(app: Any, sock: socket.socket, **uvicorn_options: Any) -> None:
    import uvicorn

    from ..server import uvicorn_config

    uvicorn.Server(uvicorn_config(app, **uvicorn_options)).run(sockets=[sock])


@click.command()
@click.option("--host", envvar="TASKREPORT_SERVE_HOST", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", envvar="TASKREPORT_SERVE_PORT", type=click.IntRange(0, 65535), default=8000, show_default=True
)
@click.option(
    "--db",
    envvar="TASKREPORT_SERVE_DB",
    help="Store: a SQLite path or postgresql://... [default: the embedded store, $TASKREPORT_HOME/taskreport.db]",
)
@click.option("--certfile", envvar="TASKREPORT_SERVE_CERTFILE", type=click.Path(exists=True, dir_okay=False))
@click.option("--keyfile", envvar="TASKREPORT_SERVE_KEYFILE", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--allow-http",
    envvar="TASKREPORT_SERVE_ALLOW_HTTP",
    is_flag=True,
    help="Serve plain HTTP on a non-loopback address (only behind a TLS-terminating proxy).",
)
@click.option(
    "--base-url",
    envvar="TASKREPORT_SERVE_BASE_URL",
    help="Public URL for links [default: a response's own Host; in deliveries, the bound address].",
)
@click.option("--org", "organization", envvar="TASKREPORT_SERVE_ORG", default=LOCAL_ORGANIZATION, show_default=True)
@click.option("--project", envvar="TASKREPORT_SERVE_PROJECT", default=DEFAULT_PROJECT, show_default=True)
@click.option("--username", envvar="TASKREPORT_SERVE_USERNAME", default="admin", show_default=True)
@click.option("--password", envvar="TASKREPORT_SERVE_PASSWORD", help="For the first user [default: generated].")
@click.option(
    "--write-config/--no-write-config",
    envvar="TASKREPORT_SERVE_WRITE_CONFIG",
    default=None,
    help="On a new database, point this machine's config file at the server [default: unless it points "
    "at another server already].",
)
@click.option("--rate-limit", envvar="TASKREPORT_SERVE_RATE_LIMIT", help="Per token, e.g. 100/s or 6000/minute.")
@click.option(
    "--login-rate-limit",
    envvar="TASKREPORT_SERVE_LOGIN_RATE_LIMIT",
    default="10/minute",
    show_default=True,
    help="POST /api/authenticate/ attempts per client address, e.g. 5/minute; 'off' for none.",
)
@click.option(
    "--token-cache-seconds",
    envvar="TASKREPORT_SERVE_TOKEN_CACHE",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
)
@click.option(
    "--sweep-interval",
    envvar="TASKREPORT_SERVE_SWEEP_INTERVAL",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds between sweeps for stale and over-running tasks; 0 turns the sweeper off.",
)
@click.option(
    "--delivery-attempts",
    envvar="TASKREPORT_SERVE_DELIVERY_ATTEMPTS",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
)
@click.option(
    "--delivery-backoff",
    envvar="TASKREPORT_SERVE_DELIVERY_BACKOFF",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
)
@click.option(
    "--read-timeout",
    envvar="TASKREPORT_SERVE_READ_TIMEOUT",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a request body may stall before the request is answered with 408.",
)
@click.option(
    "--max-batch-ops",
    envvar="TASKREPORT_SERVE_MAX_BATCH_OPS",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Operations one POST .../tasks/batch/ may hold.",
)
@click.option(
    "--allow-private-webhooks",
    envvar="TASKREPORT_SERVE_ALLOW_PRIVATE_WEBHOOKS",
    is_flag=True,
    help="Let webhooks reach loopback, private and link-local addresses (refused by default).",
)
@click.option(
    "--email-domains",
    envvar="TASKREPORT_SERVE_EMAIL_DOMAINS",
    help="Comma-separated domains email actions may send to [default: any address].",
)
@click.option("--smtp-host", envvar="TASKREPORT_SERVE_SMTP_HOST", help="SMTP server for email actions.")
@click.option(
    "--smtp-port", envvar="TASKREPORT_SERVE_SMTP_PORT", type=click.IntRange(1, 65535), default=25, show_default=True
)
@click.option("--smtp-from", envvar="TASKREPORT_SERVE_SMTP_FROM", default="taskreport@localhost", show_default=True)
@click.option("--smtp-username", envvar="TASKREPORT_SERVE_SMTP_USERNAME")
@click.option("--smtp-password", envvar="TASKREPORT_SERVE_SMTP_PASSWORD")
@click.option("--smtp-starttls", envvar="TASKREPORT_SERVE_SMTP_STARTTLS", is_flag=True)
@click.option(
    "--workers",
    envvar="TASKREPORT_SERVE_WORKERS",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Server processes sharing the port (and the database): for PostgreSQL, one per core or two.",
)
@click.option(
    "--db-pool-size",
    envvar="TASKREPORT_SERVE_DB_POOL_SIZE",
    type=click.IntRange(2, 1000),
    default=10,
    show_default=True,
    help="PostgreSQL connections each server process opens at most.",
)
@click.option("--log-level", envvar="TASKREPORT_SERVE_LOG_LEVEL", default="info", show_default=True)
@click.option("--access-log", envvar="TASKREPORT_SERVE_ACCESS_LOG", is_flag=True, help="Log every request.")
def serve(**opts: Any) -> None:
    """Run the task service (the task API) on this machine.

    On a database without tokens it first creates an organization, project, user and token, prints the
    token once and writes url and token to this machine's config file (unless that points at another
    server: --write-config to repoint it).
    """
    try:
        from ..server import RateLimit, ServerSettings, SmtpSettings, create_app, serve_forked
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    tls = bool(opts["certfile"])
    if opts["keyfile"] and not tls:
        raise click.UsageError("--keyfile needs --certfile")
    check_bind(opts["host"], tls, opts["allow_http"])
    try:
        rate_limit = RateLimit.parse(opts["rate_limit"]) if opts["rate_limit"] else None
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--rate-limit") from None
    login_rate_limit = None
    if opts["login_rate_limit"].strip().lower() not in ("off", "none", "0"):
        try:
            login_rate_limit = RateLimit.parse(opts["login_rate_limit"])
        except ConfigurationError as exc:
            raise click.BadParameter(str(exc), param_hint="--login-rate-limit") from None
    smtp = None
    if opts["smtp_host"]:
        smtp = SmtpSettings(
            opts["smtp_host"],
            opts["smtp_port"],
            sender=opts["smtp_from"],
            username=opts["smtp_username"],
            password=opts["smtp_password"],
            starttls=opts["smtp_starttls"],
        )
    email_domains = None
    if opts["email_domains"] is not None:
        email_domains = frozenset(d for d in opts["email_domains"].split(",") if d.strip())
        if not email_domains:
            raise click.BadParameter("give at least one domain", param_hint="--email-domains")
    url = local_url(opts["host"], opts["port"], tls)
    base_url = opts["base_url"].rstrip("/") if opts["base_url"] else None
    spread = opts["workers"] > 1 and SPREAD_CONNECTIONS
    # spread: the parent's socket holds the port (and finds it busy, or picks it for --port 0) but never listens
    sock = listen_on(opts["host"], opts["port"], reuse_port=spread)
    settings = ServerSettings(
        store_url=opts["db"] or default_db(),
        base_url=base_url or (None if opts["host"] in _WILDCARDS else url),
        # the links in webhook and email deliveries when there is no base URL: never a request's Host
        bind_url=local_url(opts["host"], sock.getsockname()[1], tls),
        rate_limit=rate_limit,
        login_rate_limit=login_rate_limit,
        token_cache_seconds=opts["token_cache_seconds"],
        sweep_interval=opts["sweep_interval"],
        delivery_attempts=opts["delivery_attempts"],
        delivery_backoff=opts["delivery_backoff"],
        read_timeout=opts["read_timeout"],
        max_batch_ops=opts["max_batch_ops"],
        smtp=smtp,
        allow_private_webhooks=opts["allow_private_webhooks"],
        email_domains=email_domains,
        db_pool_size=opts["db_pool_size"],
    )
    app = create_app(settings)
    made = bootstrap(app.store, opts["organization"], opts["project"], opts["username"], opts["password"])
    if made is not None:
        click.echo(
            f"New database: created organization {made['organization']!r}, project {made['project']!r} "
            f"and user {made['username']!r}."
        )
        if "password" in made:
            click.echo(f"  password: {made['password']}  (generated; shown only now)")
        click.echo(f"  token:    {made['token']}  (shown only now: the database keeps a hash)")
        values = {"token": made["token"], "organization": made["organization"], "project": made["project"]}
        note = update_config(url, values, opts["write_config"])
        if note:
            click.echo(note)
    click.echo(f"Serving the task API on {url} (store: {app.store!r})", err=True)
    click.echo(f"Dashboard: {base_url or settings.bind_url}/  (sign in with a user of this database)", err=True)
    if settings.base_url is None:
        click.echo(
            f"Links in webhook and email deliveries point at {settings.bind_url}: give --base-url to have "
            "them use the address clients know this server by.",
            err=True,
        )
    uvicorn_options = {
        "ssl_certfile": opts["certfile"],
        "ssl_keyfile": opts["keyfile"],
        "log_level": opts["log_level"],
        "access_log": opts["access_log"],
    }
    if opts["workers"] == 1:
        # uvicorn shuts down gracefully on Ctrl+C, then re-raises it: a normal way to stop a server, not an error
        with contextlib.suppress(KeyboardInterrupt):
            run_server(app, sock, **uvicorn_options)
        return
    # each worker opens its own connections after the fork; the parent keeps none (nor a pool's threads)
    app.store.close()
    click.echo(f"Starting {opts['workers']} server processes", err=True)

    def run_worker() -> None:
        own = sock
        if spread:
            own = bind_socket(opts["host"], sock.getsockname()[1], reuse_port=True)
            sock.close()  # the parent's, in this process: the parent keeps its own
        run_server(create_app(settings), own, **uvicorn_options)

    sys.exit(serve_forked(run_worker, opts["workers"]))
