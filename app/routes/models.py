"""The registry API: list tasks and versions, inspect a version, promote one (behind the gates), the history."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Path as PathParam, Query
from fastapi.responses import FileResponse

from app.dependencies import AdminDep, ServerDep
from app.schemas import (ErrorResponse, HistoryEvent, HistoryResponse, LayerSummary, ModelsIndex, PromoteResponse,
                         ReplicaView, StoreView, TaskDetail, TaskSummary, VersionBrief, VersionDetail)
from app.serving.heartbeat import utc_stamp
from app.serving.server import ModelServer
from models.registry import DEFAULT_ALIAS, MAX_NAME_LENGTH
from models.registry.history import MAX_REASON_LENGTH
from models.registry.store import check_name

router = APIRouter(prefix="/models", tags=["registry"])
TaskParam = Annotated[str, PathParam(description="task name", examples=["digits"])]
VersionParam = Annotated[str, PathParam(description="version id or alias", examples=["production"])]
NOT_FOUND = {404: {"model": ErrorResponse, "description": "unknown task or version"}}
MAX_HISTORY = 10_000  # events per answer: the log grows forever, an answer must not


def _aliases_of(aliases: dict[str, str], version: str) -> list[str]:
    return sorted(alias for alias, target in aliases.items() if target == version)


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


@router.get("", response_model=ModelsIndex, summary="All tasks with their versions and aliases")
async def list_models(server: ServerDep) -> ModelsIndex:
    registry = server.registry
    summaries = []
    for task in registry.tasks():
        aliases = registry.aliases(task)
        production = registry.manifest(task, aliases[DEFAULT_ALIAS]) if DEFAULT_ALIAS in aliases else None
        summaries.append(TaskSummary(task=task, kind=production.kind if production else None,
                                     title=production.title if production else None,
                                     input=production.preprocessing.get("kind") if production else None, aliases=aliases,
                                     versions=registry.versions(task)))
    return ModelsIndex(tasks=summaries)


@router.get("/{task}", response_model=TaskDetail, responses=NOT_FOUND, summary="One task's versions")
async def show_task(task: TaskParam, server: ServerDep) -> TaskDetail:
    registry = server.registry
    aliases = registry.aliases(task)
    briefs = []
    for version in registry.versions(task):
        manifest = registry.manifest(task, version)
        briefs.append(VersionBrief(version=version, kind=manifest.kind, created_at=manifest.created_at,
                                   architecture=manifest.architecture.name, parameters=manifest.parameters,
                                   metrics=_headline(manifest.metrics), aliases=_aliases_of(aliases, version)))
    store = store_view(server, task)
    wanted = store.aliases if store is not None and store.aliases is not None else aliases  # the store's word
    replicas = [ReplicaView(replica=r["replica"], host=r["host"], pid=r["pid"], time=r["time"], age_s=r["age_s"],
                            stale=r["stale"], aliases=r["serving"].get(task, {}),
                            converged=r["serving"].get(task, {}) == wanted)
                for r in await server.pool.run(server.heartbeat.replicas)]
    return TaskDetail(task=task, aliases=aliases, versions=briefs, replicas=replicas,
                      converged=all(r.converged for r in replicas if not r.stale), store=store)


def store_view(server: ModelServer, task: str) -> StoreView | None:
    """This process's view of its object store, as it concerns `task` (None for a local directory)."""
    poller = server.store_poller
    if poller is None:
        return None
    state = poller.state
    synced = state.last_sync_unix
    return StoreView(url=state.url, degraded=state.degraded, error=state.error,
                     last_sync=utc_stamp(synced) if synced is not None else None,
                     aliases=poller.mirror.store_aliases.get(task), refused=dict(state.refused.get(task, {})))


# Before /{task}/{version}, which would take "history" for a version id.
@router.get("/{task}/history", response_model=HistoryResponse, responses=NOT_FOUND,
            summary="Every promotion, rollback, canary and shadow of a task, oldest first, with who made it")
async def task_history(task: TaskParam, server: ServerDep,
                       limit: Annotated[int, Query(ge=1, le=MAX_HISTORY, description="the latest this many")] = 1000,
                       ) -> HistoryResponse:
    events = await server.pool.run(server.registry.history, task)
    return HistoryResponse(task=task, events=[HistoryEvent.model_validate(record) for record in events[-limit:]])


@router.get("/{task}/{version}", response_model=VersionDetail, responses=NOT_FOUND,
            summary="A version's manifest and layer-by-layer summary")
async def show_version(task: TaskParam, version: VersionParam, server: ServerDep) -> VersionDetail:
    model = await server.acquire(task, version)
    summary = await server.summary(model)
    return VersionDetail(task=task, version=model.version, aliases=_aliases_of(server.registry.aliases(task), model.version),
                         manifest=model.manifest.stored(), summary=LayerSummary(**summary))


@router.get("/{task}/{version}/artifacts/{name}", responses=NOT_FOUND, response_class=FileResponse,
            summary="A file kept with the version (learning curves, confusion matrix, history)")
async def get_artifact(task: TaskParam, version: VersionParam, name: str, server: ServerDep) -> FileResponse:
    check_name(name, "artifact")
    path: Path = server.registry.artifact_path(task, version, name)
    return FileResponse(path)


@router.post("/{task}/{version}/promote", response_model=PromoteResponse,
             responses={**NOT_FOUND, 401: {"model": ErrorResponse}, 403: {"model": ErrorResponse},
                        409: {"model": ErrorResponse, "description": "the version fails verification "
                              "(checksum_mismatch), or a gate refuses it (promotion_refused, with "
                              "`details.reasons`; `force=true` overrides)"}},
             summary="Point an alias (default: production) at a version, behind the promotion gates")
async def promote_version(task: TaskParam, version: VersionParam, server: ServerDep, actor: AdminDep,
                          alias: Annotated[str, Query(min_length=1, max_length=MAX_NAME_LENGTH)] = DEFAULT_ALIAS,
                          force: Annotated[bool, Query(description="promote even if a gate refuses (the reasons "
                                                       "are recorded as overridden)")] = False,
                          reason: Annotated[str, Query(max_length=MAX_REASON_LENGTH,
                                                       description="why, for the history")] = "") -> PromoteResponse:
    """Verifies and loads the version first, then compares it with the alias's version (labels, input
    signature, evaluation metric within MODELHOUSE_PROMOTION_TOLERANCE) and moves the alias atomically:
    the next request is served by the new version, no restart, and no request ever sees half of one.
    Recorded in the history with the admin token's identity."""
    check_name(alias, "alias")
    model = await server.acquire(task, version)
    promotion = await server.pool.run(partial(
        server.registry.promote_detailed, task, model.version, alias, actor=actor, force=force, reason=reason,
        tolerance=server.settings.promotion_tolerance))
    return PromoteResponse(task=task, alias=alias, version=promotion.version, previous=promotion.previous,
                           forced=promotion.forced, overridden=list(promotion.overridden), replicas_url=f"/models/{task}")
