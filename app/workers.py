"""Worker processes that each listen on their own socket (SO_REUSEPORT), so the kernel balances connections.

uvicorn's `workers=N` shares one listening socket: the process that wakes first accepts every pending
connection, and keep-alive clients stay where they landed. With wrk's 32 connections over 2 workers we saw
30/2, 27/5 and 10/22 splits (`ss -tnp`), and the busy worker's queue set the p99 while the other idled.
Here each worker binds its own socket with SO_REUSEPORT and the kernel hashes new connections across the
listening ones. A worker listens only once its lifespan startup (model preload) is done, so no connection
waits behind a loading worker; one that dies is restarted, one that cannot start stops the service.

Caveats of SO_REUSEPORT: connections still queued (not yet accepted) on a worker that dies are reset, as
accepted ones are in any design; any process of the same user may join the port's group; Linux only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import multiprocessing
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from app.protocol import HeaderTimeoutProtocol
from app.request_ids import configure_logging

log = logging.getLogger("uvicorn.error")
REBALANCE = signal.SIGUSR1  # launcher -> survivors: a replacement listens, hand it a share of connections
APP_FACTORY = "app.main:create_app"  # uvicorn imports and calls it in each worker (factory=True)
STOP_GRACE_S = 30.0  # per worker, after SIGTERM: in-flight requests finish (compose's stop_grace_period is 30 s too)


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, not yet listening (asyncio calls `listen`)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class WorkerServer(uvicorn.Server):
    """uvicorn's server, plus what rebalancing needs: it sets `listening` (an event the launcher polls)
    once its socket listens, and on SIGUSR1 it closes its share of keep-alive connections."""

    def __init__(self, config: uvicorn.Config, workers: int, listening: Any) -> None:
        super().__init__(config)
        self.workers, self.listening = workers, listening

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(REBALANCE, self.shed_connections)
        notify = loop.create_task(self._notify_when_listening())
        try:
            await super().serve(sockets)
        finally:
            notify.cancel()

    async def _notify_when_listening(self) -> None:
        while not self.started:
            await asyncio.sleep(0.05)
        if self.listening is not None:
            self.listening.set()

    def shed_connections(self) -> None:
        """Close 1/workers of the open connections (idle ones now, busy ones after their answer): the
        clients reconnect and the kernel hashes them over every listening socket, a new worker's too."""
        connections = list(self.server_state.connections)
        for connection in connections[: len(connections) // self.workers]:
            connection.shutdown()
        log.info("rebalancing: closed %d of %d connections", len(connections) // self.workers, len(connections))


def serve_one(host: str, port: int, uvicorn_options: dict[str, Any], workers: int = 1, listening: Any = None,
              header_timeout_s: float = HeaderTimeoutProtocol.timeout_s) -> None:
    """One worker process: its own socket, one uvicorn server; exits STARTUP_FAILURE if it never started."""
    configure_logging(uvicorn_options.get("log_level", "info"))  # a spawned interpreter: its own logging setup
    HeaderTimeoutProtocol.timeout_s = header_timeout_s
    server = WorkerServer(uvicorn.Config(APP_FACTORY, host=host, port=port, **uvicorn_options), workers, listening)
    try:
        sock = bound_socket(host, port)
    except OSError as exc:
        log.error("cannot bind %s:%d: %s", host, port, exc)
        sys.exit(STARTUP_FAILURE)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def run_workers(count: int, host: str, port: int, uvicorn_options: dict[str, Any], *,
                header_timeout_s: float = HeaderTimeoutProtocol.timeout_s) -> int:
    """Run `count` workers until SIGINT/SIGTERM; returns the exit status (STARTUP_FAILURE if one cannot start)."""
    uvicorn.Config(APP_FACTORY, host=host, port=port, **uvicorn_options)  # sets up uvicorn's logging here too
    try:
        bound_socket(host, port).close()  # fail early: a bad host, the port taken by a non-reuseport listener
    except OSError as exc:
        log.error("cannot bind %s:%d: %s", host, port, exc)
        return STARTUP_FAILURE
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch/onnxruntime threads
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    listening: dict[int, Any] = {}  # replacement pid -> its event, until it listens

    def start() -> BaseProcess:
        event = context.Event()
        process = context.Process(target=serve_one, args=(host, port, uvicorn_options, count, event, header_timeout_s),
                                  daemon=False)
        process.start()
        listening[process.pid] = event
        log.info("started worker process [%d]", process.pid)
        return process

    workers, status = [start() for _ in range(count)], 0
    listening.clear()  # the first workers need no rebalancing
    try:
        while not stopping:
            time.sleep(0.2)
            _rebalance_once_listening(workers, listening)
            for index, process in enumerate(workers):
                if process.is_alive():
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    log.error("worker process [%d] could not start; stopping", process.pid)
                    stopping, status = True, STARTUP_FAILURE
                    break
                log.warning("worker process [%d] exited with %s; restarting it", process.pid, process.exitcode)
                workers[index] = start()
    finally:
        _stop_all(workers)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def _rebalance_once_listening(workers: list[BaseProcess], listening: dict[int, Any]) -> None:
    """When a replacement worker listens, ask the others to hand it their share of connections: keep-alive
    clients stay where they landed, so after a restart the survivors would keep them all."""
    for pid, event in list(listening.items()):
        if event.is_set():
            del listening[pid]
            for process in workers:
                if process.pid != pid and process.is_alive():
                    os.kill(process.pid, REBALANCE)


def _stop_all(workers: list[BaseProcess]) -> None:
    """SIGTERM to every worker (uvicorn's graceful shutdown), then wait; SIGKILL what outlives the grace."""
    for process in workers:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for process in workers:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.warning("worker process [%d] did not stop in %.0f s; killing it", process.pid, STOP_GRACE_S)
            process.kill()
            process.join()
