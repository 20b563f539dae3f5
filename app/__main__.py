"""Run the service: `python -m app [--host H] [--port P] [--workers N]` (what `make serve` and the image use).

Several worker processes (default: one per CPU core, measured best on 2 cores: `python -m bench.serving`)
each listen on the port with SO_REUSEPORT, so the kernel balances connections (`app/workers.py`); each loads
the models and batches its own requests, so Python's GIL is not the ceiling. Prometheus metrics are
aggregated across them through a multiprocess directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import uvicorn

from app.protocol import HeaderTimeoutProtocol
from app.request_ids import configure_logging
from app.settings import Settings
from app.workers import APP_FACTORY, run_workers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: Settings.workers, i.e. MODELHOUSE_WORKERS or CPU cores)")
    parser.add_argument("--log-level", default=None, help="default: Settings.log_level")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = Settings()
    args.workers = settings.workers if args.workers is None else args.workers
    args.log_level = (args.log_level or settings.log_level).lower()
    if args.workers < 1:
        parser.error("--workers must be at least 1")  # exits 2 with the usage line
    metrics_dir = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="modelhouse-metrics-")  # fresh: no stale samples from an old run
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    options = {"log_level": args.log_level, "access_log": False, "factory": True, "http": HeaderTimeoutProtocol,
               "timeout_keep_alive": settings.keep_alive_timeout_s, "limit_concurrency": settings.max_connections}
    HeaderTimeoutProtocol.timeout_s = settings.header_timeout_s
    configure_logging(args.log_level)
    try:
        if args.workers == 1:
            uvicorn.run(APP_FACTORY, host=args.host, port=args.port, **options)
            return 0
        return run_workers(args.workers, args.host, args.port, options, header_timeout_s=settings.header_timeout_s)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
