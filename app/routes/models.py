"""The registry API: list tasks and versions, inspect a version, promote one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path as PathParam, Query
from fastapi.responses import FileResponse

from app.dependencies import ServerDep, require_admin
from app.schemas import (ErrorResponse, LayerSummary, ModelsIndex, PromoteResponse, TaskDetail, TaskSummary,
                         VersionBrief, VersionDetail)
from models.registry import DEFAULT_ALIAS, MAX_NAME_LENGTH
from models.registry.store import check_name

router = APIRouter(prefix="/models", tags=["registry"])
TaskParam = Annotated[str, PathParam(description="task name", examples=["digits"])]
VersionParam = Annotated[str, PathParam(description="version id or alias", examples=["production"])]
NOT_FOUND = {404: {"model": ErrorResponse, "description": "unknown task or version"}}


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
    return TaskDetail(task=task, aliases=aliases, versions=briefs)


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


@router.post("/{task}/{version}/promote", response_model=PromoteResponse, dependencies=[Depends(require_admin)],
             responses={**NOT_FOUND, 401: {"model": ErrorResponse}, 403: {"model": ErrorResponse},
                        409: {"model": ErrorResponse, "description": "the version fails verification"}},
             summary="Point an alias (default: production) at a version")
async def promote_version(task: TaskParam, version: VersionParam, server: ServerDep,
                          alias: Annotated[str, Query(min_length=1, max_length=MAX_NAME_LENGTH)] = DEFAULT_ALIAS) -> PromoteResponse:
    """Verifies and loads the version first, then moves the alias atomically: the next request is
    served by the new version, no restart, and no request ever sees half of one."""
    check_name(alias, "alias")
    previous = server.registry.aliases(task).get(alias)
    model = await server.acquire(task, version)
    await server.pool.run(server.registry.promote, task, model.version, alias)
    return PromoteResponse(task=task, alias=alias, version=model.version, previous=previous)
