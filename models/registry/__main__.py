"""Registry CLI: `python -m models.registry {list,show,promote,verify}`.

Works on the store directly (no running service needed); a running service picks up a
promotion made here on its next request, because it re-reads the alias file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models.registry import DEFAULT_ALIAS, DEFAULT_ROOT, ModelRegistry, RegistryError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models.registry", description=__doc__)
    parser.add_argument("--store", type=Path, default=DEFAULT_ROOT, help="registry root (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="tasks, versions and aliases").add_argument("task", nargs="?")
    show = sub.add_parser("show", help="print a version's manifest")
    show.add_argument("task")
    show.add_argument("version", nargs="?", default=DEFAULT_ALIAS)
    promote = sub.add_parser("promote", help="point an alias at a version (after verifying it)")
    promote.add_argument("task")
    promote.add_argument("version")
    promote.add_argument("--alias", default=DEFAULT_ALIAS)
    verify = sub.add_parser("verify", help="check the sha256 of every version's files")
    verify.add_argument("task", nargs="?")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    registry = ModelRegistry(args.store)
    try:
        if args.command == "list":
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
            version = registry.promote(args.task, args.version, args.alias)
            print(f"{args.task}: {args.alias} -> {version}")
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
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
