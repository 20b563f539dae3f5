"""The benchmarks' results files: `bench/results/<bench>.md`, committed, each headed by its provenance.

Every benchmark writes its latest results through `write_results`: a Markdown file that says when it
was written (UTC), which commit it measured (`-dirty` when tracked files outside bench/results/ differed
from it), on what machine (CPU model, cores, memory, load, Python and torch versions) and the exact
command that produced it. JSON side files (`write_json`) stay beside it, git-ignored. `publish` does all
three: prints the report, writes the .md and the .json.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.report")

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table; `align` has one letter per column, `l` or `r` (default: first left, the rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers):
        raise ValueError(f"align {align!r} does not have one letter per column ({len(headers)})")
    line = lambda cells: "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"  # noqa: E731
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


SECRET_ENV = {"MODELHOUSE_ADMIN_TOKEN"}


def command_line(prog: str, argv: Sequence[str] | None = None) -> str:
    """The command as typed: `prog` (e.g. "python -m bench.serving") and `argv` (default: `sys.argv[1:]`),
    after the `MODELHOUSE_*` variables set in the environment (the token's value left out)."""
    env = [f"{k}={'***' if k in SECRET_ENV else shlex.quote(v)}" for k, v in sorted(os.environ.items())
           if k.startswith("MODELHOUSE_")]
    return " ".join([*env, prog, shlex.join(sys.argv[1:] if argv is None else list(argv))]).rstrip()


def git_commit() -> str:
    """`git rev-parse --short HEAD`, plus "-dirty" when a tracked file outside bench/results/ differs."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout, or git missing)"
    return f"{commit}-dirty" if changed else commit


def _proc_field(path: str, key: str) -> str | None:
    """The value of the first `key: value` line of a /proc file, or None."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.split(":", 1)[0].strip() == key), None)


def machine() -> str:
    """CPU model, cores, memory, load average, Python and torch versions, in one line."""
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()
    mem_kb = _proc_field("/proc/meminfo", "MemTotal")
    memory = f"{int(mem_kb.split()[0]) / 1024**2:.1f} GiB memory" if mem_kb else "memory unknown"
    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch = "not installed"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    return (f"{cpu}, {os.cpu_count()} cores, {memory} (load average {load} when written); "
            f"Python {platform.python_version()}, torch {torch}")


def header(command: str, started: float | None = None) -> str:
    """The provenance lines every results file starts with."""
    now = time.time()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now))
    if started is not None:
        when += f" (started {time.strftime('%H:%M', time.gmtime(started))}, {(now - started) / 60:.0f} min)"
    return "\n".join([f"- written: {when}", f"- commit: `{git_commit()}`", f"- machine: {machine()}",
                      f"- command: `{command}`"])


def write_results(bench: str, title: str, sections: Sequence[str] | str, *, command: str,
                  started: float | None = None, directory: Path = RESULTS_DIR) -> Path:
    """Write `<directory>/<bench>.md`: `# title`, the provenance header, then `sections` (Markdown)."""
    parts = [sections] if isinstance(sections, str) else list(sections)
    text = "\n\n".join([f"# {title}", header(command, started), *(p.strip("\n") for p in parts)]) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{bench}.md"
    path.write_text(text)
    log.info("wrote %s", path)
    return path


def write_json(bench: str, data: Any, directory: Path = RESULTS_DIR) -> Path:
    """Write the raw numbers to `<directory>/<bench>.json` (git-ignored, beside the committed .md)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{bench}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def publish(bench: str, title: str, sections: Sequence[str] | str, data: Any, *, command: str,
            started: float | None = None, directory: Path = RESULTS_DIR) -> Path:
    """Print `sections` to stdout, write `<bench>.md` (`write_results`) and `<bench>.json` (`data`)."""
    print(sections if isinstance(sections, str) else "\n\n".join(sections))
    path = write_results(bench, title, sections, command=command, started=started, directory=directory)
    write_json(bench, data, directory=directory)
    return path
