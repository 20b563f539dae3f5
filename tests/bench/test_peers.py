"""bench.serving's peers: the choice of peers fails early naming the valid ones, the TorchServe
handler answers a batch the way the service's /digits does (same weights, same labels), and the HTTP
floor answers a /digits-shaped body and runs uvicorn's lifespan."""

from __future__ import annotations

import json

import pytest

from bench.serving import PEERS, main
from tests.conftest import png_bytes


def test_an_unknown_peer_is_refused_naming_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--peers", "tutorial-2w,bentoml"])
    assert exited.value.code == 2
    assert "unknown ['bentoml']" in capsys.readouterr().err and all(name in PEERS for name in ("tutorial-2w",))


def test_the_torchserve_handler_classifies_a_batch_like_the_service(client, mnist_test):
    from bench.peers.torchserve_handler import handle

    images, labels = mnist_test
    rows = [{"file": bytearray(png_bytes(images[i]))} for i in range(4)]  # TorchServe hands the parts over as bytearrays
    answers = [json.loads(a)["predictions"][0] for a in handle(rows, None)]
    served = [client.post("/digits", params={"top_k": 3}, files=[("file", ("d.png", bytes(r["file"]), "image/png"))])
              .json()["predictions"][0] for r in rows]
    assert [a["label"] for a in answers] == [s["label"] for s in served] == [str(int(v)) for v in labels[:4]]


def test_the_http_floor_reads_the_body_and_answers_like_digits():
    import asyncio

    asyncio.run(floor_round_trip())


async def floor_round_trip() -> None:
    import asyncio

    import httpx

    from bench.peers.http_floor import app

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://floor") as client:
        answer = await client.post("/digits", files=[("file", ("d.png", b"x" * 100_000, "image/png"))])
    assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] == "7"
    events = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[dict] = []

    async def receive() -> dict:
        return next(events)

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(app({"type": "lifespan"}, receive, send), 5)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
