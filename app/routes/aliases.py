"""Rollout routes: an alias's state, and its canary split and shadow (start and end); admin-only writes."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Path as PathParam, Query

from app.dependencies import AdminDep, ServerDep
from app.rollout_schemas import AliasState, CanaryRequest, ShadowRequest
from app.schemas import ErrorResponse
from models.registry.history import MAX_REASON_LENGTH
from models.registry.store import check_name

router = APIRouter(prefix="/models/{task}/aliases/{alias}", tags=["rollouts"])
TaskParam = Annotated[str, PathParam(description="task name", examples=["digits"])]
AliasParam = Annotated[str, PathParam(description="alias", examples=["production"])]
ReasonParam = Annotated[str, Query(max_length=MAX_REASON_LENGTH, description="why (recorded in the history)")]
READ_ERRORS = {404: {"model": ErrorResponse, "description": "unknown task or alias"}}
WRITE_ERRORS = {**READ_ERRORS, 400: {"model": ErrorResponse, "description": "a body that is not JSON"},
                401: {"model": ErrorResponse}, 403: {"model": ErrorResponse},
                409: {"model": ErrorResponse, "description": "the candidate fails verification, or its labels or "
                      "input differ from the incumbent's (canary: unless `force`)"},
                422: {"model": ErrorResponse, "description": "invalid rollout parameters (named in the message)"}}


def _check(task: str, alias: str) -> None:
    check_name(task, "task")
    check_name(alias, "alias")


@router.get("", response_model=AliasState, responses=READ_ERRORS,
            summary="The alias's version, and any canary or shadow with this process's counts")
async def alias_state(task: TaskParam, alias: AliasParam, server: ServerDep) -> AliasState:
    _check(task, alias)
    return AliasState(**server.rollouts.alias_state(task, alias))


@router.post("/canary", response_model=AliasState, responses=WRITE_ERRORS,
             summary="Start a canary: a share of the alias's requests go to a candidate")
async def start_canary(task: TaskParam, alias: AliasParam, body: CanaryRequest, server: ServerDep,
                       actor: AdminDep) -> AliasState:
    """Replaces any canary of the alias. Promoting the candidate completes it; `DELETE` ends it by hand;
    a breach of either threshold over `window` candidate requests ends it on its own (in the history)."""
    _check(task, alias)
    await server.acquire(task, body.version)  # verified and loaded before any request goes to it
    await server.pool.run(partial(server.registry.start_canary, task, alias, body.version, percent=body.percent,
                                  max_error_rate=body.max_error_rate, max_p99_ms=body.max_p99_ms,
                                  window=body.window, actor=actor, force=body.force))
    return AliasState(**server.rollouts.alias_state(task, alias))


@router.delete("/canary", response_model=AliasState, responses=WRITE_ERRORS,
               summary="End the alias's canary: every request goes to the incumbent again")
async def end_canary(task: TaskParam, alias: AliasParam, server: ServerDep, actor: AdminDep,
                     reason: ReasonParam = "ended by hand") -> AliasState:
    return await _end(server, task, alias, "canary", actor, reason)


@router.post("/shadow", response_model=AliasState, responses=WRITE_ERRORS,
             summary="Start a shadow: a share of the alias's requests also run on a candidate, never served")
async def start_shadow(task: TaskParam, alias: AliasParam, body: ShadowRequest, server: ServerDep,
                       actor: AdminDep) -> AliasState:
    _check(task, alias)
    await server.acquire(task, body.version)
    await server.pool.run(partial(server.registry.start_shadow, task, alias, body.version, percent=body.percent,
                                  actor=actor))
    return AliasState(**server.rollouts.alias_state(task, alias))


@router.delete("/shadow", response_model=AliasState, responses=WRITE_ERRORS,
               summary="End the alias's shadow")
async def end_shadow(task: TaskParam, alias: AliasParam, server: ServerDep, actor: AdminDep,
                     reason: ReasonParam = "ended by hand") -> AliasState:
    return await _end(server, task, alias, "shadow", actor, reason)


async def _end(server: ServerDep, task: str, alias: str, rollout: str, actor: str, reason: str) -> AliasState:
    """End the alias's canary or shadow (`rollout`), recording this process's counts of it."""
    _check(task, alias)
    before = server.rollouts.alias_state(task, alias)
    end = server.registry.end_canary if rollout == "canary" else server.registry.end_shadow
    await server.pool.run(partial(end, task, alias, actor=actor, reason=reason, stats=_counts(before[rollout])))
    return AliasState(**server.rollouts.alias_state(task, alias))


def _counts(state: dict | None) -> dict | None:
    """What this process counted of a rollout, for the history's record of its end."""
    if state is None:
        return None
    keys = ("requests", "errors", "error_rate", "p99_ms", "compared", "agreement", "drops")
    return {key: state[key] for key in keys if key in state}
