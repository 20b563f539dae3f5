"""Micro-batching: batches form under load, a lone request is not held back, overload is shed."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pytest

from app.batching import BatchObserver, BatchPolicy, MicroBatcher, QueueFullError, gather_with_timeout
from app.kinds.image_classification import ImageClassification
from app.main import create_app
from app.settings import Settings
from tests.conftest import png_bytes


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def batch_done(self, size: int, seconds: float) -> None:
        self.sizes.append(size)


async def in_thread(fn, items, alive):
    return await asyncio.to_thread(fn, items, alive)


def test_arrivals_during_a_batch_form_the_next_batch():
    gate = threading.Event()

    def process(items: list[int], alive=None) -> list[int]:
        gate.wait(5)
        return [i * 10 for i in items]

    async def scenario() -> tuple[list[int], list[int]]:
        recorder = Recorder()
        batcher = MicroBatcher(process, BatchPolicy(max_batch_size=8), in_thread, recorder)
        first = batcher.submit([0])
        await asyncio.sleep(0.05)  # the first batch (one item) is now running and blocked
        rest = batcher.submit(list(range(1, 11)))
        gate.set()
        results = await gather_with_timeout(first + rest, 5)
        await batcher.close()
        return results, recorder.sizes

    results, sizes = asyncio.run(scenario())
    assert results == [i * 10 for i in range(11)]
    assert sizes == [1, 8, 2]  # max_batch_size respected, order kept


def test_a_lone_item_runs_at_once_and_a_max_wait_lets_a_batch_grow():
    async def scenario(wait_ms: float) -> tuple[float, list[int]]:
        recorder = Recorder()
        batcher = MicroBatcher(lambda items, alive: items, BatchPolicy(max_wait_ms=wait_ms), in_thread, recorder)
        started = time.perf_counter()
        futures = batcher.submit(["a"])
        await asyncio.sleep(0.01)
        futures += batcher.submit(["b"])
        await gather_with_timeout(futures, 5)
        await batcher.close()
        return time.perf_counter() - started, recorder.sizes

    _, sizes = asyncio.run(scenario(0))
    assert sizes == [1, 1]
    elapsed, sizes = asyncio.run(scenario(200))
    assert sizes == [2] and elapsed < 1.0


def test_a_full_queue_is_refused_whole_and_errors_stay_per_item():
    def process(items: list[int], alive=None) -> list[object]:
        return [ValueError("bad") if i < 0 else i for i in items]

    async def scenario() -> list[object]:
        batcher = MicroBatcher(process, BatchPolicy(max_queue=3), in_thread)
        with pytest.raises(QueueFullError):
            batcher.submit([1, 2, 3, 4])
        results = await gather_with_timeout(batcher.submit([1, -1, 2]), 5)
        await batcher.close()
        return results

    first, error, last = asyncio.run(scenario())
    assert (first, last) == (1, 2) and isinstance(error, ValueError)


def test_batched_results_equal_one_by_one(client, mnist_test):
    images = mnist_test[0][:16]
    together = client.post("/digits", params={"top_k": 10},
                           files=[("file", (f"{i}.png", png_bytes(d), "image/png")) for i, d in enumerate(images)])
    alone = [client.post("/digits", params={"top_k": 10}, files=[("file", ("x.png", png_bytes(d), "image/png"))])
             for d in images]
    for batched, single in zip(together.json()["predictions"], alone):
        a = {t["label"]: t["probability"] for t in batched["top"]}
        b = {t["label"]: t["probability"] for t in single.json()["predictions"][0]["top"]}
        assert np.allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(a)], atol=1e-5)


def test_concurrent_requests_share_forward_passes(store, mnist_test):
    app = create_app(Settings(store_dir=store, device="cpu", preload=False, batch_max_wait_ms=50))
    body = [("file", ("d.png", png_bytes(mnist_test[0][0]), "image/png"))]

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            responses = await asyncio.gather(*[client.post("/digits", files=body) for _ in range(24)])
            return [r.status_code for r in responses]

    assert asyncio.run(scenario()) == [200] * 24
    text = app.state.metrics.registry.get_sample_value
    version = app.state.server.registry.resolve("digits")
    batches = text("modelhouse_batch_size_count", {"task": "digits", "version": version})
    assert batches is not None and batches < 24, f"{batches} forward passes for 24 requests"


def test_503_with_retry_after_when_the_queue_is_full(make_client, mnist_test):
    client = make_client(queue_max=2)
    payload = png_bytes(mnist_test[0][0])
    response = client.post("/digits", files=[("file", (f"{i}.png", payload, "image/png")) for i in range(3)])
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "overloaded"
    assert client.post("/digits", files=[("file", ("ok.png", payload, "image/png"))]).status_code == 200


def test_504_past_the_request_timeout_and_the_service_goes_on(make_client, mnist_test):
    client = make_client(request_timeout_s=1e-9)
    response = client.post("/digits", files=[("file", ("d.png", png_bytes(mnist_test[0][0]), "image/png"))])
    assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
    healthy = client.get("/healthz")
    assert healthy.status_code == 200


def test_settings_refuse_a_timeout_shorter_than_the_batch_wait():
    with pytest.raises(ValueError, match="request_timeout_s"):
        Settings(request_timeout_s=0.001, batch_max_wait_ms=5)


def test_concurrency_two_runs_two_batches_at_once():
    barrier = threading.Barrier(2, timeout=5)  # only passes if two batches are in flight together

    def process(items: list[int], alive=None) -> list[int]:
        barrier.wait()
        return items

    async def scenario() -> list[int]:
        batcher = MicroBatcher(process, BatchPolicy(max_batch_size=1, concurrency=2),
                               lambda fn, items, alive: asyncio.get_running_loop().run_in_executor(pool, fn, items, alive))
        results = await gather_with_timeout(batcher.submit([1, 2]), 10)
        await batcher.close()
        return results

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        assert asyncio.run(scenario()) == [1, 2]


def test_an_idle_cheap_model_runs_on_the_event_loop_and_a_busy_one_queues():
    threads: list[int] = []
    gate = threading.Event()
    gate.set()

    def process(items: list[int], alive=None) -> list[object]:
        threads.append(threading.get_ident())
        gate.wait(5)
        return [ValueError("bad") if i < 0 else i * 10 for i in items]

    async def scenario() -> None:
        loop_thread = threading.get_ident()
        batcher = MicroBatcher(process, BatchPolicy(inline_max_ms=1000), in_thread)
        assert await gather_with_timeout(batcher.submit([1]), 5) == [10]  # cost unknown yet: on a thread
        assert threads[-1] != loop_thread and batcher.item_seconds is not None
        futures = batcher.submit([2, -1])  # idle and cheap: answered before submit returns
        assert all(f.done() for f in futures) and threads[-1] == loop_thread
        answer, error = await gather_with_timeout(futures, 5)
        assert answer == 20 and isinstance(error, ValueError)
        gate.clear()
        batcher.item_seconds = None  # next batch goes to a thread, where it blocks on the gate
        blocked = batcher.submit([4])
        await asyncio.sleep(0.05)
        batcher.item_seconds = 0.0
        queued = batcher.submit([5])  # a batch is running: queue behind it, do not run inline
        assert not queued[0].done()
        gate.set()
        assert await gather_with_timeout(blocked + queued, 5) == [40, 50]
        assert threads[-1] != loop_thread
        await batcher.close()

    asyncio.run(scenario())


def test_no_inline_run_for_a_model_over_the_threshold_or_with_a_batch_wait():
    def process(items: list[int], alive=None) -> list[int]:
        time.sleep(0.005)
        return items

    async def scenario(policy: BatchPolicy) -> list[bool]:
        batcher = MicroBatcher(process, policy, in_thread)
        inline = []
        for i in range(3):
            futures = batcher.submit([i])
            inline.append(futures[0].done())
            await gather_with_timeout(futures, 5)
        await batcher.close()
        return inline

    assert asyncio.run(scenario(BatchPolicy(inline_max_ms=1))) == [False] * 3  # 5 ms per item > 1 ms
    assert asyncio.run(scenario(BatchPolicy(inline_max_ms=1000, max_wait_ms=1))) == [False] * 3
    assert asyncio.run(scenario(BatchPolicy(inline_max_ms=1000))) == [False, True, True]


def test_a_lone_request_runs_inline_only_with_small_inputs(make_client, mnist_test, monkeypatch):
    threads: list[str] = []
    predict = ImageClassification.predict

    def recording(self, model, items, alive=lambda _: True):
        threads.append(threading.current_thread().name)
        return predict(self, model, items, alive)

    monkeypatch.setattr(ImageClassification, "predict", recording)
    png = png_bytes(mnist_test[0][0])
    for limit, inline in ((len(png), True), (len(png) - 1, False)):
        client = make_client(batch_inline_max_ms=1000, batch_inline_max_bytes=limit)
        threads.clear()
        for _ in range(3):  # the first measures the model's cost on an inference thread
            response = client.post("/digits", files={"file": ("d.png", png, "image/png")})
            assert response.status_code == 200, response.text
        assert threads[0].startswith("inference")
        assert [not name.startswith("inference") for name in threads[1:]] == [inline, inline], threads


def test_settings_refuse_an_unknown_batch_policy_key():
    with pytest.raises(ValueError, match="unknown keys \\['max_batch'\\]; valid: max_batch_size"):
        Settings(batching={"digits": {"max_batch": 8}})
