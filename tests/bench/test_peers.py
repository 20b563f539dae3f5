"""bench.serving's peers: the choice of peers fails early naming the valid ones, and the TorchServe
handler answers a batch the way the service's /digits does (same weights, same labels)."""

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
