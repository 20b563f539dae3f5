"""FLOOR, NOT A PEER AND NOT PART OF THE SERVICE: the cost of HTTP alone on this machine.

A bare ASGI app under the same uvicorn (httptools, uvloop) and worker count as the service: it reads the
whole request body and answers a fixed JSON body of the size of a /digits answer, with no multipart
parsing, no decoding and no model. No server built on uvicorn can serve a cell faster than this, so
`python -m bench.serving` shows the project's share of it beside the ratio against the peers.
Run: `uvicorn bench.peers.http_floor:app --workers 2`.
"""

from __future__ import annotations

from typing import Any

ANSWER = (b'{"model":{"task":"digits","version":"floor"},"predictions":[{"filename":"digit.png","label":"7",'
          b'"confidence":0.999,"unknown":false,"top":[{"label":"7","index":7,"probability":0.999},'
          b'{"label":"2","index":2,"probability":0.0005},{"label":"3","index":3,"probability":0.0003}]}]}')
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":  # nothing to set up or tear down
        while True:
            event = (await receive())["type"].rpartition(".")[2]  # startup, shutdown
            await send({"type": f"lifespan.{event}.complete"})
            if event == "shutdown":
                return
    more = True
    while more:  # the body, read to its end as any real server must
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
