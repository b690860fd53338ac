"""The service's own endpoints: ping, the schema, logging in (``/api/authenticate/``) and the user."""

from __future__ import annotations

from importlib import resources

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .._errors import NotAcceptable, NotFound, ValidationError
from .._store import Tx, hash_password
from .._validation import valid_text
from ._api import Api
from ._auth import authentication_failed
from ._request import Ctx, expect_object
from ._responses import JSON_TYPE, accepts, json_response
from ._routing import Resource

_SCHEMA_TYPES = ("application/vnd.oai.openapi", "application/yaml", JSON_TYPE, "application/vnd.oai.openapi+json")
#: the name of the tokens ``POST /api/authenticate/`` issues
LOGIN_TOKEN = "authenticate"


async def ping(api: Api, ctx: Ctx) -> Response:
    return json_response({"status": "ok"})


async def schema(api: Api, ctx: Ctx) -> Response:
    wanted = ctx.request.query_params.get("format")
    if wanted is None:
        chosen = accepts(ctx.request.headers.get("accept"), _SCHEMA_TYPES)
        if chosen is None:
            raise NotAcceptable("Could not satisfy the request Accept header.")
        as_json = chosen.endswith("json")
    elif wanted in ("json", "yaml", "openapi"):
        as_json = wanted == "json"
    else:
        raise NotFound("Not found.")
    name = "openapi.json" if as_json else "openapi.yaml"
    data = resources.files("taskreport.server").joinpath(name).read_bytes()
    kind = "application/vnd.oai.openapi+json" if as_json else "application/vnd.oai.openapi"
    return Response(data, media_type=kind + "; charset=utf-8")


async def authenticate(api: Api, ctx: Ctx) -> Response:
    data = expect_object(await api.body(ctx, form=True))
    for field in ("username", "password"):
        if not isinstance(data.get(field), str) or not data[field]:
            raise ValidationError("This field is required.", attr=field, code="required")
        valid_text(field, data[field])
    username, password = data["username"], data["password"]
    user = await api.read(lambda tx: tx.authenticate_user(username, password))
    if user is None:
        raise authentication_failed()
    # a hash made at an older cost is replaced now that the password is known; hashed here, in the thread
    # pool, because the writer must not spend a slow hash holding every other write
    new_hash = await run_in_threadpool(hash_password, password) if user["rehash"] else None

    def issue(tx: Tx) -> tuple[list[str], str, list[str]]:
        accounts = tx.organization_slugs(user["id"])
        if not accounts:
            raise authentication_failed("User has no organization.")
        if new_hash is not None:
            tx.set_password(user["id"], new_hash)
        token = tx.create_token(accounts[0], user_id=user["id"], name=LOGIN_TOKEN)
        # tokens are stored hashed, so a login can not hand back an earlier one: each login makes a new
        # one and the oldest beyond the cap are revoked, so that logins in a loop do not pile up keys
        revoked = tx.keep_newest_tokens(user["id"], LOGIN_TOKEN, api.settings.login_tokens_per_user)
        return accounts, token, revoked

    accounts, token, revoked = await api.write(issue)
    api.forget_tokens(revoked)
    return json_response(
        {"account": accounts[0], "token": token, "accounts": accounts, "user": f"{ctx.base}/api/users/{user['id']}/"}
    )


async def user(api: Api, ctx: Ctx) -> Response:
    assert ctx.info is not None
    user_id = ctx.params["user"]
    if ctx.info.user_id != user_id:
        raise NotFound("Not found.")
    row = await api.read(lambda tx: tx.get_user(user_id))
    if row is None:
        raise NotFound("Not found.")
    return json_response({"id": row["id"], "username": row["username"], "accounts": row["accounts"]})


PING = Resource({"GET": ping}, public=True)
SCHEMA = Resource({"GET": schema}, public=True, negotiate=False)
AUTHENTICATE = Resource({"POST": authenticate}, public=True, per_address=True)
USER = Resource({"GET": user})
