"""`RolloutControl`: the model server's canary splits and shadows, and the alias state the API shows.

What a rollout is lives in the store (`models.registry.rollouts`); what it did lives here, per process:
each worker counts its own canary and shadow requests (the state endpoint says which process answered).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from functools import partial
from typing import TYPE_CHECKING, Any

from app.request_ids import current_request_id
from app.serving.rollouts import CanaryWatch, CanaryWatches, goes_to_canary
from app.serving.shadow import ShadowJob, ShadowRunner
from models.registry.rollouts import AliasRollout, Shadow

if TYPE_CHECKING:
    from app.kinds import Decoded, ModelKind
    from app.serving.server import ModelServer
    from models.runtime import LoadedModel

log = logging.getLogger(__name__)
AUTO_ROLLBACK_ACTOR = "auto-rollback"
# Shadowed requests run together, up to this many per forward pass: the per-call overhead spread thin
SHADOW_GROUP_MAX = 16


class RolloutControl:
    def __init__(self, server: ModelServer) -> None:
        self.server = server
        self.canaries = CanaryWatches()
        settings = server.settings
        self.shadows = ShadowRunner(server.shadow_top1, settings.shadow_queue_max, SHADOW_GROUP_MAX,
                                    settings.shadow_time_share, self._count_shadow)
        self._rollbacks: set[asyncio.Task[None]] = set()

    # ---- canary -------------------------------------------------------------------------
    def canary_watch(self, task: str, alias: str | None, rollout: AliasRollout | None) -> CanaryWatch | None:
        """The watch of the canary this request goes to, or None when it goes to the incumbent."""
        if rollout is None or rollout.canary is None or alias is None:
            return None
        watch = self.canaries.get(task, alias, rollout.canary)
        if watch.ended or not goes_to_canary(current_request_id.get(), rollout.canary.percent):
            return None
        return watch

    def observe_canary(self, watch: CanaryWatch, latency_s: float, failed: bool) -> None:
        breach = watch.observe(latency_s, failed)
        if breach is not None:  # once per canary: the watch stops routing to it at once
            log.warning("canary %s/%s of %s breached: %s; rolling back", watch.task, watch.canary.version,
                        watch.alias, breach)
            task = asyncio.get_running_loop().create_task(self._roll_back(watch, breach))
            self._rollbacks.add(task)
            task.add_done_callback(self._rollbacks.discard)

    async def _roll_back(self, watch: CanaryWatch, reason: str) -> None:
        """End the canary in the store (every process and replica stops routing to it) and count it."""
        registry, server = self.server.registry, self.server
        try:
            # only_if: ended only if it is still this canary, checked under the store's lock (it may have been
            # ended by hand, replaced, or rolled back by another process meanwhile)
            ended = await server.pool.run(partial(registry.end_canary, watch.task, watch.alias,
                                                  actor=AUTO_ROLLBACK_ACTOR, reason=reason, rolled_back=True,
                                                  stats=watch.stats(), only_if=watch.canary))
            if ended is not None:
                server.metrics.canary_rollbacks.labels(watch.task, watch.alias, watch.canary.version).inc()
        except Exception:  # the split is already off in this process; the store keeps it for the others
            log.exception("could not record the rollback of canary %s/%s", watch.task, watch.canary.version)

    # ---- shadow -------------------------------------------------------------------------
    def maybe_shadow(self, task: str, alias: str, shadow: Shadow, decode: Any, kind: ModelKind,
                     model: LoadedModel, decoded: Decoded, outcomes: list[Any]) -> None:
        """Queue this served request for the shadow with probability `shadow.percent` / 100: all the request
        path pays (the comparison and the candidate's run happen on the shadow's thread)."""
        if random.random() * 100 >= shadow.percent or shadow.version == model.version:
            return
        job = ShadowJob(task, alias, self.shadows.stats_for(task, alias, shadow), decode, (kind, model, decoded, outcomes))
        if self.shadows.full():
            self.shadows.drop(job)
        else:
            self.shadows.submit(job)

    def _count_shadow(self, job: ShadowJob, outcome: str, count: int) -> None:
        if not count:
            return
        metrics, labels = self.server.metrics, (job.task, job.alias, job.stats.shadow.version)
        metric = metrics.shadow_inputs if outcome in ("agree", "disagree") else metrics.shadow_failures
        metrics.child(metric, *labels, outcome).inc(count)

    # ---- state --------------------------------------------------------------------------
    def alias_state(self, task: str, alias: str) -> dict[str, Any]:
        """The alias's incumbent and any canary or shadow, with what this process counted of them."""
        resolver = self.server.resolver
        rollout = resolver.rollouts(task).get(alias) or AliasRollout(None, None)
        state: dict[str, Any] = {"task": task, "alias": alias, "version": resolver.resolve(task, alias),
                                 "process": os.getpid(), "canary": None, "shadow": None}
        if rollout.canary is not None:
            watch = self.canaries.peek(task, alias, rollout.canary)
            state["canary"] = {**vars(rollout.canary), **(watch.stats() if watch else CanaryWatch(
                task, alias, rollout.canary).stats())}
        if rollout.shadow is not None:
            stats = self.shadows.peek(task, alias, rollout.shadow) or self.shadows.stats_for(task, alias, rollout.shadow)
            state["shadow"] = {**vars(rollout.shadow), **stats.stats()}
        return state

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.shadows.close)
        for task in list(self._rollbacks):
            await task
