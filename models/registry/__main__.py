"""Registry CLI: `python -m models.registry {list,show,promote,rollback,history,verify,upload,drift}`.

Works on the store directly (no running service needed); a running service picks up a
promotion or rollback made here on its next request, because it re-reads the alias file.
Changes are recorded in the task's history as made by `cli:<user>`. `--store` also takes an object
store's URL (s3://bucket/prefix): changes then go to the store, and the fleet's replicas poll it;
`upload` copies a local store's tasks into one.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from models.registry import DEFAULT_ALIAS, DEFAULT_ROOT, PromotionRefusedError, RegistryError
from models.registry.drift import drift_main
from models.registry.errors import InvalidStoreURLError
from models.registry.synced import STORE_HELP, local_path, open_registry, store_argument, upload


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models.registry", description=__doc__)
    parser.add_argument("--store", type=store_argument, default=str(DEFAULT_ROOT),
                        help=f"{STORE_HELP} (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, help="an object store's local mirror (default: under "
                        "$XDG_CACHE_HOME/modelhouse/stores)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="tasks, versions and aliases").add_argument("task", nargs="?")
    show = sub.add_parser("show", help="print a version's manifest")
    show.add_argument("task")
    show.add_argument("version", nargs="?", default=DEFAULT_ALIAS)
    promote = sub.add_parser("promote", help="point an alias at a version (after verifying it)")
    promote.add_argument("task")
    promote.add_argument("version")
    promote.add_argument("--alias", default=DEFAULT_ALIAS)
    promote.add_argument("--force", action="store_true", help="promote even if a gate refuses (recorded)")
    promote.add_argument("--reason", default="", help="why, for the history")
    promote.add_argument("--tolerance", type=float, default=0.0,
                         help="how much worse the evaluation metric may be, absolute (default: %(default)s)")
    rollback = sub.add_parser("rollback", help="point an alias back at the version it pointed at before")
    rollback.add_argument("task")
    rollback.add_argument("--alias", default=DEFAULT_ALIAS)
    rollback.add_argument("--reason", default="", help="why, for the history")
    history = sub.add_parser("history", help="a task's promotions, rollbacks, canaries and shadows, oldest first")
    history.add_argument("task")
    history.add_argument("--json", action="store_true", help="the raw JSON lines")
    verify = sub.add_parser("verify", help="check the sha256 of every version's files")
    verify.add_argument("task", nargs="?")
    upload = sub.add_parser("upload", help="copy this store's tasks into an object store (versions it lacks; "
                            "aliases, rollouts and history only where it has none)")
    upload.add_argument("url", type=store_argument, help="s3://bucket[/prefix]")
    upload.add_argument("tasks", nargs="*", help="default: every task")
    drift = sub.add_parser("drift", add_help=False, help="compare a prediction log's class mix and confidence with "
                           "the version's baseline (`drift --help` for its options)")
    drift.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw[:1] == ["drift"]:  # its own parser and help
        return drift_main(raw[1:])
    args = build_parser().parse_args(raw)
    if args.command == "drift":  # its own parser; a --store given after `drift` wins over the global one
        return drift_main(["--store", str(args.store), *args.rest])
    try:
        registry = open_registry(args.store, args.cache_dir, sync=True)
        if args.command == "upload":
            if local_path(args.url) is not None:
                raise InvalidStoreURLError(f"upload goes to an object store (s3://bucket[/prefix]), not {args.url}")
            for name in upload(registry, args.url, args.tasks or None):
                print(f"uploaded {name}")
        elif args.command == "list":
            for task in [args.task] if args.task else registry.tasks():
                aliases = registry.aliases(task)
                by_version: dict[str, list[str]] = {}
                for alias, version in aliases.items():
                    by_version.setdefault(version, []).append(alias)
                print(f"{task}:")
                for version in registry.versions(task):
                    tags = f"  [{', '.join(sorted(by_version.get(version, [])))}]" if version in by_version else ""
                    print(f"  {version}{tags}")
        elif args.command == "show":
            print(json.dumps(registry.manifest(args.task, args.version).stored(), indent=2))
        elif args.command == "promote":
            version = registry.promote(args.task, args.version, args.alias, actor=cli_actor(), force=args.force,
                                       reason=args.reason, tolerance=args.tolerance)
            print(f"{args.task}: {args.alias} -> {version}")
        elif args.command == "rollback":
            moved = registry.rollback(args.task, args.alias, actor=cli_actor(), reason=args.reason)
            print(f"{args.task}: {args.alias} -> {moved.version} (was {moved.previous})")
        elif args.command == "history":
            for record in registry.history(args.task):
                print(json.dumps(record) if args.json else format_event(record))
        elif args.command == "verify":
            failures = 0
            for task in [args.task] if args.task else registry.tasks():
                for version in registry.versions(task):
                    try:
                        registry.verify_version(task, version)
                        print(f"ok      {task}/{version}")
                    except RegistryError as exc:
                        failures += 1
                        print(f"FAILED  {task}/{version}: {exc}")
            return 1 if failures else 0
    except PromotionRefusedError as exc:
        print(f"error: {exc}\n(--force promotes anyway; the overridden reasons are recorded)", file=sys.stderr)
        return 2
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cli_actor() -> str:
    """Who the history says made a change from this command line: `cli:<login name>`."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name in the environment nor the password database
        return "cli:unknown"


def format_event(record: dict[str, Any]) -> str:
    """One readable line per history event: time, event, alias, from -> to, actor, reason, overrides."""
    line = (f"{record.get('time')}  {record.get('event', '?'):<15}  {record.get('alias') or '-'}  "
            f"{record.get('from') or '-'} -> {record.get('to') or '-'}  by {record.get('actor')}")
    if record.get("reason"):
        line += f": {record['reason']}"
    if record.get("overridden"):
        line += f"  [forced over: {'; '.join(record['overridden'])}]"
    return line


if __name__ == "__main__":
    sys.exit(main())
