"""`Batchers`: one `MicroBatcher` per served version, with its policy resolved once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from app.batching import BatchFn, BatchObserver, BatchPolicy, MicroBatcher
from models.runtime import LoadedModel


class Batchers:
    """The micro-batcher of each (task, version), created on first use (event-loop thread only).

    Policy precedence: settings' per-task overrides > the manifest's `serving` block > global settings.
    """

    def __init__(self, policy: BatchPolicy, task_policies: dict[str, dict[str, Any]],
                 runner: Callable[[str], Callable[..., Awaitable[list[Any]]]]) -> None:
        """`runner(task)`: how that task's batches are run off the event loop (`InferencePool.runner`)."""
        self.policy, self.task_policies, self.runner = policy, task_policies, runner
        self._batchers: dict[tuple[str, str], MicroBatcher] = {}

    def policy_for(self, model: LoadedModel) -> BatchPolicy:
        return self.policy.merged(model.manifest.serving.batch_overrides()).merged(self.task_policies.get(model.task))

    def get(self, model: LoadedModel, process: BatchFn, observer: Callable[[], BatchObserver]) -> MicroBatcher:
        """`model`'s batcher; `process` and `observer()` are used only when it is created."""
        key = (model.task, model.version)
        batcher = self._batchers.get(key)
        if batcher is None:
            batcher = self._batchers[key] = MicroBatcher(process, self.policy_for(model), self.runner(model.task),
                                                         observer())
        return batcher

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        self._batchers.clear()
