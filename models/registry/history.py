"""A task's history: an append-only JSON-lines log of every change to its aliases and rollouts.

`<task>/history.jsonl`, one event per line, oldest first:
`{"time", "event", "task", "alias", "from", "to", "reason", "actor", ...details}`. For `promote` and
`rollback`, `from`/`to` are the alias's versions before and after; for the `canary_*` and `shadow_*`
events, `from` is the alias's incumbent and `to` the candidate. Lines are appended under the task's lock
(`models.registry.layout.task_lock`), so concurrent writers on one host never interleave; a line cut
short by a crash is skipped when read, and the next append starts on a line of its own.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.registry.layout import check_name, task_lock

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

log = logging.getLogger(__name__)
HISTORY_FILE = "history.jsonl"
EVENTS = ("promote", "rollback", "canary_start", "canary_end", "canary_rollback", "canary_complete",
          "shadow_start", "shadow_end")
RESERVED_KEYS = ("time", "event", "task", "alias", "from", "to", "reason", "actor")
MAX_REASON_LENGTH = 500  # a reason is a sentence, not a document


def utc_timestamp() -> str:
    """Now in UTC, ISO-8601 to the millisecond (events of one second stay in order when read)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_event(task: str, event: str, *, actor: str, alias: str | None, from_version: str | None,
              to_version: str | None, reason: str, details: dict[str, Any]) -> dict[str, Any]:
    """The record of one event; `ValueError` for an unknown event, an empty actor or a reserved detail key."""
    if event not in EVENTS:
        raise ValueError(f"unknown history event {event!r}; valid: {', '.join(EVENTS)}")
    if not actor:
        raise ValueError("every history event names its actor (who or what made the change)")
    clashes = sorted(set(details) & set(RESERVED_KEYS))
    if clashes:
        raise ValueError(f"history details must not use the reserved keys {clashes}")
    return {"time": utc_timestamp(), "event": event, "task": task,
            "alias": alias, "from": from_version, "to": to_version, "reason": reason[:MAX_REASON_LENGTH],
            "actor": actor, **details}


def append_event(directory: Path, record: dict[str, Any]) -> None:
    """Append `record` as one line of `directory`'s history (0644 less the umask); the caller holds its lock."""
    path = directory / HISTORY_FILE
    line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
    with open(os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644), "r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":  # the last append was cut short: keep it a line of its own
                line = "\n" + line
        handle.write(line.encode())
        handle.flush()
        os.fsync(handle.fileno())


def read_events(directory: Path) -> list[dict[str, Any]]:
    """Every event of `directory`'s history, oldest first ([] without one); lines that are not a JSON
    object (a write cut short by a crash) are skipped with a warning rather than failing the read."""
    path = directory / HISTORY_FILE
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    events = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            events.append(record)
        else:
            log.warning("%s: line %d is not a JSON object (a write cut short?); skipped", path, number)
    return events


class HistoryMixin:
    """`ModelRegistry`'s lock, event log and its reading (the registry supplies `task_dir`)."""

    if TYPE_CHECKING:
        def task_dir(self, task: str) -> Path: ...

    def alias_lock(self, task: str) -> AbstractContextManager[None]:
        """The exclusive lock of `task`'s aliases, history and rollouts (re-entrant in one thread); every
        writer of them holds it. `UnknownTaskError` for a task with no version."""
        return task_lock(self.task_dir(task))

    def record_event(self, task: str, event: str, *, actor: str, alias: str | None = None,
                     from_version: str | None = None, to_version: str | None = None, reason: str = "",
                     **details: Any) -> dict[str, Any]:
        """Append one event (one of `EVENTS`) to `task`'s history under its lock; return the record.
        `details` (JSON values) are stored beside the standard keys."""
        if alias is not None:
            check_name(alias, "alias")
        record = new_event(task, event, actor=actor, alias=alias, from_version=from_version,
                           to_version=to_version, reason=reason, details=details)
        with self.alias_lock(task):
            append_event(self.task_dir(task), record)
        return record

    def history(self, task: str) -> list[dict[str, Any]]:
        """`task`'s events, oldest first; [] before its first recorded change."""
        return read_events(self.task_dir(task))
