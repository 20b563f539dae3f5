"""Guarded rollouts in the store: an alias's canary (a share of its traffic served by a candidate, rolled
back on a breach) and shadow (a share of its traffic also run on a candidate, never answered).

`<task>/rollouts.json` is `{"<alias>": {"canary": {...}, "shadow": {...}}}`, either key absent when
inactive. It is written atomically under the task's lock, with a history event for every change, so
every worker process and replica sharing the store sees one complete state and the same split. What a
rollout did (requests, errors, latency) lives in each serving process, not here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from models.registry.errors import InvalidManifestError, InvalidRolloutError, PromotionRefusedError, UnknownVersionError
from models.registry.gates import compatibility_refusals
from models.registry.history import HistoryMixin, append_event, new_event, utc_timestamp
from models.registry.layout import check_name, read_aliases
from models.registry.manifest import read_json_object, write_json_atomic
from models.registry.schema import NAME_PATTERN, Manifest, is_number

ROLLOUTS_FILE = "rollouts.json"


@dataclass(frozen=True)
class Canary:
    """`percent` of the alias's requests go to `version` until a breach over the last `window` of them
    (error rate above `max_error_rate`, or p99 latency above `max_p99_ms`) rolls it back."""

    version: str
    percent: float
    max_error_rate: float
    max_p99_ms: float
    window: int
    started_at: str
    actor: str


@dataclass(frozen=True)
class Shadow:
    """`percent` of the alias's requests are also run on `version`, off the response path."""

    version: str
    percent: float
    started_at: str
    actor: str


@dataclass(frozen=True)
class AliasRollout:
    canary: Canary | None
    shadow: Shadow | None


_FILE = TypeAdapter(dict[str, AliasRollout])


def read_rollouts(directory: Path) -> dict[str, AliasRollout]:
    """`directory`'s active rollouts by alias ({} without a file); `InvalidManifestError` names a bad one."""
    path = directory / ROLLOUTS_FILE
    if not path.is_file():
        return {}
    payload = read_json_object(path)
    bad = [alias for alias, entry in payload.items() if not (NAME_PATTERN.match(alias) and isinstance(entry, dict))]
    if bad:
        raise InvalidManifestError(f"{path}: entries must be alias names with an object each, not {bad}")
    try:
        return _FILE.validate_python({alias: {"canary": entry.get("canary"), "shadow": entry.get("shadow")}
                                      for alias, entry in payload.items()})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidManifestError(f"{path}: {problems}") from None


def write_rollouts(directory: Path, rollouts: dict[str, AliasRollout]) -> None:
    """Replace `directory`'s rollouts atomically (0644), leaving out aliases with nothing active; the
    caller holds the task's lock."""
    payload = {alias: {key: value for key, value in asdict(entry).items() if value is not None}
               for alias, entry in sorted(rollouts.items()) if entry.canary or entry.shadow}
    write_json_atomic(directory / ROLLOUTS_FILE, payload)


def check_canary(percent: float, max_error_rate: float, max_p99_ms: float, window: int) -> None:
    """`InvalidRolloutError` naming every canary parameter out of its range."""
    problems = []
    if not (is_number(percent) and 0 < percent < 100):
        problems.append(f"percent must be > 0 and < 100 (the share of the alias's requests), not {percent!r}")
    if not (is_number(max_error_rate) and 0 <= max_error_rate <= 1):
        problems.append(f"max_error_rate must be between 0 and 1, not {max_error_rate!r}")
    if not (is_number(max_p99_ms) and max_p99_ms > 0):
        problems.append(f"max_p99_ms must be a number > 0, not {max_p99_ms!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        problems.append(f"window must be a whole number of requests >= 1, not {window!r}")
    if problems:
        raise InvalidRolloutError("; ".join(problems))


class RolloutsMixin(HistoryMixin):
    """`ModelRegistry`'s canaries and shadows (the registry supplies the reading and verifying)."""

    if TYPE_CHECKING:
        def manifest(self, task: str, ref: str = ...) -> Manifest: ...
        def verify_version(self, task: str, ref: str) -> Manifest: ...

    def rollouts(self, task: str) -> dict[str, AliasRollout]:
        """`task`'s active canaries and shadows by alias ({} when none)."""
        return read_rollouts(self.task_dir(task))

    def start_canary(self, task: str, alias: str, version: str, *, percent: float, max_error_rate: float,
                     max_p99_ms: float, window: int, actor: str, force: bool = False, reason: str = "") -> Canary:
        """Send `percent` of `alias`'s requests to `version` (verified first), replacing any canary the
        alias had. Refused (`PromotionRefusedError`) when its labels or input signature differ from the
        incumbent's, which would change what clients' requests mean, unless `force`; metrics are not
        gated (a canary is how a candidate is tested). `InvalidRolloutError` for a value out of range
        or a version that is already the incumbent."""
        check_canary(percent, max_error_rate, max_p99_ms, window)
        candidate = self.verify_version(task, version)
        with self.alias_lock(task):
            directory, incumbent = self._incumbent(task, alias, candidate, "canary")
            refusals = compatibility_refusals(incumbent, candidate)
            if refusals and not force:
                raise PromotionRefusedError(f"a canary of {task}/{candidate.version} on {alias} is refused", refusals)
            canary = Canary(candidate.version, float(percent), float(max_error_rate), float(max_p99_ms), window,
                            utc_timestamp(), actor)
            events = self._replace(directory, task, alias, canary=canary)
            events.append(new_event(task, "canary_start", actor=actor, alias=alias, from_version=incumbent.version,
                                    to_version=canary.version, reason=reason,
                                    details={"percent": canary.percent, "max_error_rate": canary.max_error_rate,
                                             "max_p99_ms": canary.max_p99_ms, "window": window,
                                             **({"forced": True, "overridden": refusals} if refusals else {})}))
            self._append(directory, events)
        return canary

    def end_canary(self, task: str, alias: str, *, actor: str, reason: str, rolled_back: bool = False,
                   stats: dict[str, Any] | None = None, only_if: Canary | None = None) -> Canary | None:
        """Stop `alias`'s canary (all its traffic back to the incumbent) and record `canary_rollback`
        (`rolled_back`) or `canary_end`, with `stats`; return it, or None when there is none, or when
        `only_if` is given and the active canary is another (ended or replaced meanwhile)."""
        with self.alias_lock(task):
            directory = self.task_dir(task)
            entry = read_rollouts(directory).get(alias)
            if entry is None or entry.canary is None or (only_if is not None and entry.canary != only_if):
                return None
            self._replace(directory, task, alias, canary=None)
            self._append(directory, [new_event(
                task, "canary_rollback" if rolled_back else "canary_end", actor=actor, alias=alias,
                from_version=read_aliases(directory).get(alias), to_version=entry.canary.version, reason=reason,
                details={"stats": stats})])
        return entry.canary

    def start_shadow(self, task: str, alias: str, version: str, *, percent: float, actor: str,
                     reason: str = "") -> Shadow:
        """Also run `percent` (0-100] of `alias`'s requests on `version` (verified first), replacing any
        shadow the alias had. No gate: a shadow never answers a client."""
        if not (is_number(percent) and 0 < percent <= 100):
            raise InvalidRolloutError(f"percent must be > 0 and <= 100 (the share of the alias's requests), "
                                      f"not {percent!r}")
        candidate = self.verify_version(task, version)
        with self.alias_lock(task):
            directory, incumbent = self._incumbent(task, alias, candidate, "shadow")
            shadow = Shadow(candidate.version, float(percent), utc_timestamp(), actor)
            events = self._replace(directory, task, alias, shadow=shadow)
            events.append(new_event(task, "shadow_start", actor=actor, alias=alias, from_version=incumbent.version,
                                    to_version=shadow.version, reason=reason, details={"percent": shadow.percent}))
            self._append(directory, events)
        return shadow

    def end_shadow(self, task: str, alias: str, *, actor: str, reason: str,
                   stats: dict[str, Any] | None = None) -> Shadow | None:
        """Stop `alias`'s shadow and record `shadow_end` with `stats`; return it, or None when there is none."""
        with self.alias_lock(task):
            directory = self.task_dir(task)
            entry = read_rollouts(directory).get(alias)
            if entry is None or entry.shadow is None:
                return None
            self._replace(directory, task, alias, shadow=None)
            self._append(directory, [new_event(
                task, "shadow_end", actor=actor, alias=alias,
                from_version=read_aliases(directory).get(alias), to_version=entry.shadow.version, reason=reason,
                details={"stats": stats})])
        return entry.shadow

    # ---- under the lock ------------------------------------------------------------------
    def _incumbent(self, task: str, alias: str, candidate: Manifest, what: str) -> tuple[Path, Manifest]:
        """The task directory and the manifest `alias` serves, which `candidate` must not be."""
        directory = self.task_dir(task)
        aliases = read_aliases(directory)
        if alias not in aliases:
            raise UnknownVersionError(f"task {task!r} has no alias {check_name(alias, 'alias')!r} to run a {what} "
                                      f"on; aliases: {', '.join(sorted(aliases)) or 'none'}")
        if aliases[alias] == candidate.version:
            raise InvalidRolloutError(f"{task}/{candidate.version} is what {alias} already serves: a {what} "
                                      "needs another version")
        return directory, self.manifest(task, aliases[alias])

    def _replace(self, directory: Path, task: str, alias: str, **change: Any) -> list[dict[str, Any]]:
        """Write `alias`'s rollout with `change` (canary= and/or shadow=, None ends one); the end events of
        what a new canary or shadow replaces, for the caller to append after its own."""
        rollouts = read_rollouts(directory)
        old = rollouts.get(alias, AliasRollout(None, None))
        events = []
        for key, new in change.items():
            previous = getattr(old, key)
            if new is not None and previous is not None:
                events.append(new_event(task, f"{key}_end", actor=new.actor, alias=alias,
                                        from_version=read_aliases(directory).get(alias),
                                        to_version=previous.version,
                                        reason=f"replaced by a {key} of {new.version}", details={"stats": None}))
        rollouts[alias] = replace(old, **change)
        write_rollouts(directory, rollouts)
        return events

    def _conclude_rollouts(self, directory: Path, task: str, alias: str, previous: str | None, version: str,
                           actor: str, how: str) -> None:
        """After `alias` moved to `version` (`how`: promote or rollback): a canary or shadow of that version
        has nothing left to compare, so it ends (a promoted canary is `canary_complete`)."""
        entry = read_rollouts(directory).get(alias)
        if entry is None:
            return
        events, change = [], {}
        if entry.canary is not None and entry.canary.version == version:
            change["canary"] = None
            events.append(new_event(task, "canary_complete" if how == "promote" else "canary_end", actor=actor,
                                    alias=alias, from_version=previous, to_version=version,
                                    reason=f"{alias} now points at it ({how})", details={"stats": None}))
        if entry.shadow is not None and entry.shadow.version == version:
            change["shadow"] = None
            events.append(new_event(task, "shadow_end", actor=actor, alias=alias, from_version=previous,
                                    to_version=version, reason=f"{alias} now points at it ({how})",
                                    details={"stats": None}))
        if change:
            self._replace(directory, task, alias, **change)
            self._append(directory, events)

    @staticmethod
    def _append(directory: Path, events: list[dict[str, Any]]) -> None:
        for record in events:
            append_event(directory, record)
