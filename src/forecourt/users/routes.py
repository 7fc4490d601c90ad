"""REST: /api/v1/users and the sign-in session endpoints under /api/v1/auth."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from forecourt.http import client_ip
from forecourt.http.deps import DbSession, ForecourtDep, current_principal, require
from forecourt.http.guard import GuardedRoute
from forecourt.http.middleware.access import SESSION_COOKIE
from forecourt.keys.models import ApiKey
from forecourt.principal import Principal
from forecourt.users.models import User, UserSession
from forecourt.users.schemas import (
    KeyLogin,
    KeySessionOut,
    Login,
    SessionKey,
    SessionOut,
    SessionsEnded,
    UserChanged,
    UserCreate,
    UserKey,
    UserOut,
    UserUpdate,
)
from forecourt.users.service import UserService, key_session_principal, key_summary

CSRF_COOKIE = "fc_csrf"

UsersRead = Annotated[Principal, Depends(require("users:read"))]
UsersWrite = Annotated[Principal, Depends(require("users:write"))]

users = APIRouter(route_class=GuardedRoute, prefix="/api/v1/users", tags=["users"])
auth = APIRouter(route_class=GuardedRoute, prefix="/api/v1/auth", tags=["auth"])


def _out(user: User) -> UserOut:
    return UserOut.model_validate(user)


def _changed(user: User, keys: list[ApiKey]) -> UserChanged:
    return UserChanged(**_out(user).model_dump(), keys=[UserKey(**key_summary(k)) for k in keys])


def _service(fc: ForecourtDep, session: DbSession) -> UserService:
    return UserService(
        session, fc.keys(session), revoke_keys=fc.settings.revoke_keys_of_removed_users
    )


@users.post("", status_code=status.HTTP_201_CREATED, response_model=UserOut)
async def create_user(body: UserCreate, actor: UsersWrite, session: DbSession) -> UserOut:
    return _out(await UserService(session).create(actor, body))


@users.get("", response_model=list[UserOut])
async def list_users(actor: UsersRead, session: DbSession) -> list[UserOut]:
    return [_out(u) for u in await UserService(session).list(actor)]


@users.get("/{user_id}", response_model=UserOut)
async def get_user(user_id: str, actor: UsersRead, session: DbSession) -> UserOut:
    return _out(await UserService(session).get(actor, user_id))


@users.patch("/{user_id}", response_model=UserChanged)
async def update_user(
    user_id: str, body: UserUpdate, actor: UsersWrite, fc: ForecourtDep, session: DbSession
) -> UserChanged:
    """Change name, role or password, or disable; a new password or disabling ends the
    user's sessions. Disabling lists the keys the user created and revokes them (unless
    ``FORECOURT_REVOKE_KEYS_OF_REMOVED_USERS`` is false). Only a user who outranks or equals
    the target, or a key holding every scope of the target's role, may change it; the last
    enabled owner can be neither disabled nor demoted (409)."""
    user, keys = await _service(fc, session).update(actor, user_id, body)
    return _changed(user, keys)


@users.delete("/{user_id}", response_model=UserChanged)
async def delete_user(
    user_id: str, actor: UsersWrite, fc: ForecourtDep, session: DbSession
) -> UserChanged:
    """Delete the user and end its sessions; the keys it created are listed and revoked
    (unless ``FORECOURT_REVOKE_KEYS_OF_REMOVED_USERS`` is false). The last enabled owner
    cannot be deleted (409)."""
    user, keys = await _service(fc, session).delete(actor, user_id)
    return _changed(user, keys)


@users.delete("/{user_id}/sessions", response_model=SessionsEnded)
async def end_user_sessions(user_id: str, actor: UsersWrite, session: DbSession) -> SessionsEnded:
    """End every sign-in session of the user, on every node."""
    return SessionsEnded(ended=await UserService(session).end_sessions(actor, user_id))


@auth.post(
    "/login",
    response_model=SessionOut,
    responses={401: {"description": "Wrong email or password, or a disabled user."}},
)
async def login(
    body: Login, request: Request, response: Response, fc: ForecourtDep, session: DbSession
) -> SessionOut:
    """Sign in; sets an HttpOnly session cookie. Cookie-authenticated writes must send the
    returned ``csrf_token`` in the ``X-CSRF-Token`` header.

    Failed attempts are throttled per account and per (account, address): past a few, each
    must wait longer (429 with ``Retry-After``), then the account locks for a while."""
    ip = client_ip.of_scope(request.scope)
    user, record, token = await UserService(session).sign_in(
        body.tenant,
        body.email,
        body.password,
        fc.settings.session_ttl_s,
        ip,
        request.headers.get("user-agent"),
        getattr(request.state, "request_id", None),
        throttle=fc.signin_throttle,
    )
    _set_cookies(response, fc, token, record)
    return SessionOut(user=_out(user), csrf_token=record.csrf_token, expires_at=record.expires_at)


@auth.post(
    "/key",
    response_model=KeySessionOut,
    responses={
        401: {
            "description": "Not a valid key: unknown, revoked, expired, or of a suspended tenant."
        }
    },
)
async def login_with_key(
    body: KeyLogin, request: Request, response: Response, fc: ForecourtDep, session: DbSession
) -> KeySessionOut:
    """Sign in with an API key (the dashboard's sign-in with the owner key, or any key);
    sets the same cookies as a password sign-in. The session acts as the key and no more
    (its scopes, tenant, tier and rate limits), and ends at once when the key is revoked or
    expires or its tenant is suspended. The key is never stored or echoed.

    Failed attempts are throttled per address as for a password sign-in (429 with
    ``Retry-After``)."""
    ip = client_ip.of_scope(request.scope)
    key, record, token = await UserService(session).sign_in_with_key(
        body.key,
        fc.key_config.secret,
        fc.settings.session_ttl_s,
        ip,
        request.headers.get("user-agent"),
        getattr(request.state, "request_id", None),
        throttle=fc.signin_throttle,
    )
    _set_cookies(response, fc, token, record)
    row = await fc.keys(session).get(key_session_principal(key, ip, None), key.id)
    return KeySessionOut(
        key=_session_key(row), csrf_token=record.csrf_token, expires_at=record.expires_at
    )


def _session_key(row: ApiKey) -> SessionKey:
    return SessionKey(id=row.id, name=row.name, prefix=row.prefix, scopes=sorted(row.scopes))


def _set_cookies(response: Response, fc: ForecourtDep, token: str, record: UserSession) -> None:
    """The HttpOnly session cookie and the readable CSRF cookie, for as long as the session."""
    secure = fc.settings.cookie_secure
    max_age = max(0, int((record.expires_at - record.created_at).total_seconds()))
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        httponly=True,
        secure=secure,
        samesite="lax",
        path="/",
    )
    response.set_cookie(
        CSRF_COOKIE,
        record.csrf_token,
        max_age=max_age,
        httponly=False,
        secure=secure,
        samesite="strict",
        path="/",
    )


@auth.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(
    request: Request,
    response: Response,
    session: DbSession,
    actor: Annotated[Principal, Depends(current_principal)],
) -> None:
    """End the current session (cookie sign-ins only)."""
    token = request.cookies.get(SESSION_COOKIE)
    service = UserService(session)
    if token and actor.via_cookie:
        resolved = await service.resolve_session(token)
        if resolved is not None:
            await service.sign_out(actor, resolved[1].id)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")


@auth.get("/me")
async def me(
    actor: Annotated[Principal, Depends(current_principal)], fc: ForecourtDep, session: DbSession
) -> dict[str, object]:
    """Who the credentials belong to, and what they may do. For an API key (a bearer key or
    a session signed in with one), ``key`` names it (id, name, prefix, scopes; never its
    secret); ``via_cookie`` tells a sign-in session from a bearer key."""
    body: dict[str, object] = {
        "actor_type": actor.actor_type,
        "actor_id": actor.actor_id,
        "tenant_id": actor.tenant_id,
        "scopes": sorted(actor.scopes),
        "via_cookie": actor.via_cookie,
    }
    if actor.actor_type == "key" and actor.actor_id is not None:
        row = await fc.keys(session).get(actor, actor.actor_id)
        body["key"] = _session_key(row).model_dump()
    return body
