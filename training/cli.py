"""What every trainer's command line shares: `run_cli` (logging, parse, run, exit status) and the run's folders.

A trainer's `main(argv)` is `run_cli(build_parser(), run, argv)`: exit status 0 when `run` returns,
2 with `error: <message>` on stderr when it raises one of `CLI_ERRORS` (missing data or weights, a
bad value, a registry refusal); anything else is a bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.paths import REPO_ROOT
from models.registry import RegistryError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Failures a user can act on: missing files or weights, values that cannot work, a refused registration.
# WeightsUnavailableError (training.imagenet_sources) is a RuntimeError.
CLI_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError, RuntimeError, RegistryError)


def run_cli(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Any],
            argv: list[str] | None = None) -> int:
    """Configure logging, parse `argv` (argparse exits 2 on bad arguments), call `run`; return the exit status."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    args = parser.parse_args(argv)
    try:
        run(args)
    except CLI_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def portable_path(path: Path) -> str:
    """`path` relative to the repository's parent when inside it (so a manifest records no home folder),
    else as given."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT.parent))
    except ValueError:
        return str(path)


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved command line as JSON-ready values (paths via `portable_path`), for the manifest."""
    return {key: portable_path(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


def run_dir(out_dir: Path | None, trainer: str, *, create: bool = True) -> Path:
    """The run folder, created (unless not `create`: then whoever writes first creates it): `out_dir`, else
    `runs/<trainer>/<local time>`."""
    directory = out_dir or Path("runs") / trainer / time.strftime("%Y%m%d-%H%M%S")
    if create:
        directory.mkdir(parents=True, exist_ok=True)
    return directory
