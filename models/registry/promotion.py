"""Moving an alias: promotion behind the gates (`models.registry.gates`), forced promotion, and rollback
to the version the history says the alias pointed at before.

Every move writes `aliases.json` atomically and appends its event to the history under the task's lock;
a canary or shadow of the version the alias now points at ends with it (`RolloutsMixin._conclude_rollouts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.registry.errors import InvalidRolloutError, PromotionRefusedError, RegistryError
from models.registry.gates import promotion_refusals
from models.registry.history import append_event, new_event, read_events
from models.registry.layout import ALIASES_FILE, DEFAULT_ALIAS, MANIFEST_FILE, check_name, read_aliases
from models.registry.manifest import write_json_atomic
from models.registry.rollouts import RolloutsMixin
from models.registry.schema import Manifest

MOVES = ("promote", "rollback")  # the events that move an alias


@dataclass(frozen=True)
class Promotion:
    """What a promotion or rollback did: `alias` now points at `version`, and pointed at `previous`.
    `overridden` lists the gates' refusals a forced promotion went past."""

    task: str
    alias: str
    version: str
    previous: str | None
    forced: bool = False
    overridden: tuple[str, ...] = ()


class PromotionMixin(RolloutsMixin):
    """`ModelRegistry.promote`, `promote_detailed` and `rollback`."""

    if TYPE_CHECKING:
        root: Path

        def resolve(self, task: str, ref: str = ...) -> str: ...

    def promote(self, task: str, ref: str, alias: str = DEFAULT_ALIAS, *, actor: str = "cli", force: bool = False,
                reason: str = "", tolerance: float = 0.0) -> str:
        """Point `alias` at the version `ref` names, behind the gates; return the version id (see
        `promote_detailed`)."""
        return self.promote_detailed(task, ref, alias, actor=actor, force=force, reason=reason,
                                     tolerance=tolerance).version

    def promote_detailed(self, task: str, ref: str, alias: str = DEFAULT_ALIAS, *, actor: str = "cli",
                         force: bool = False, reason: str = "", tolerance: float = 0.0) -> Promotion:
        """Verify the version `ref` names (`ChecksumMismatchError` first), compare it with the version
        `alias` points at (`promotion_refusals` with `tolerance`; nothing to compare when the alias is new,
        points at it already, or its version cannot be read) and move the alias, recording a `promote`
        event by `actor`. With refusals, `PromotionRefusedError` (its `reasons`) unless `force`, which
        promotes anyway and records `forced` and the `overridden` reasons. The first promotion of a
        newly registered task creates its alias file, which makes it a task."""
        check_name(alias, "alias")
        directory = self.root / check_name(task, "task")
        version = check_name(ref)
        if not (directory / version / MANIFEST_FILE).is_file():
            version = self.resolve(task, ref)
        candidate = self.verify_version(task, version)  # outside the lock: hashing may take a while
        with self.alias_lock(task):  # read-modify-write: serialise writers (service, CLI, trainers)
            previous = read_aliases(directory).get(alias)
            incumbent = None if previous in (None, version) else self._readable(task, previous)
            refusals = promotion_refusals(incumbent, candidate, tolerance)
            if refusals and not force:
                raise PromotionRefusedError(f"promoting {task}/{version} to {alias} is refused", refusals)
            self._move(directory, task, alias, "promote", previous, version, actor=actor, reason=reason,
                       forced=force, overridden=refusals)
        return Promotion(task, alias, version, previous, force, tuple(refusals))

    def rollback(self, task: str, alias: str = DEFAULT_ALIAS, *, actor: str, reason: str = "") -> Promotion:
        """Point `alias` back at the version it pointed at before its latest move (`promote` or
        `rollback` in the history; rolling back twice returns to where it started). No gates: it goes
        back to a version that was served, verified again. `InvalidRolloutError` when there is nothing
        to roll back to, or when `aliases.json` and the history disagree (changed by hand)."""
        check_name(alias, "alias")
        with self.alias_lock(task):
            directory = self.task_dir(task)
            current = read_aliases(directory).get(alias)
            if current is None:
                raise InvalidRolloutError(f"task {task!r} has no alias {alias!r}: nothing to roll back")
            last = _latest_move(read_events(directory), alias)
            if last is None or last.get("from") is None:
                raise InvalidRolloutError(f"nothing to roll back to: the history of {task!r} records no earlier "
                                          f"version of {alias!r} (it points at {current})")
            if last.get("to") != current:
                raise InvalidRolloutError(
                    f"{task}/{alias} points at {current} but its latest recorded move ({last.get('time')}) was to "
                    f"{last.get('to')} (aliases.json changed outside the registry?): promote the version you want")
            target = str(last["from"])
            self.verify_version(task, target)
            self._move(directory, task, alias, "rollback", current, target, actor=actor, reason=reason)
        return Promotion(task, alias, target, current)

    # ---- under the lock ------------------------------------------------------------------
    def _readable(self, task: str, version: str) -> Manifest | None:
        """The incumbent's manifest, or None when it cannot be read: a broken incumbent has nothing to
        protect, and replacing it must stay possible."""
        try:
            return self.manifest(task, version)
        except RegistryError:  # unreadable manifest, version directory gone
            return None

    def _move(self, directory: Path, task: str, alias: str, event: str, previous: str | None, version: str, *,
              actor: str, reason: str, **details: Any) -> None:
        record = new_event(task, event, actor=actor, alias=alias, from_version=previous, to_version=version,
                           reason=reason, details=details)  # validated before anything is written
        aliases = read_aliases(directory)
        aliases[alias] = version
        write_json_atomic(directory / ALIASES_FILE, aliases)
        append_event(directory, record)
        self._conclude_rollouts(directory, task, alias, previous, version, actor, event)


def _latest_move(events: list[dict[str, Any]], alias: str) -> dict[str, Any] | None:
    """The latest `promote` or `rollback` of `alias` that changed its version (re-promoting the same one
    moved nothing)."""
    for record in reversed(events):
        if record.get("event") in MOVES and record.get("alias") == alias and record.get("from") != record.get("to"):
            return record
    return None
