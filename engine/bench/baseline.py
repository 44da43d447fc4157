"""The transport baseline: starlette + uvicorn (ws=websockets-sansio) answering every CALL with an
empty CALLRESULT and doing nothing else. What the gateway is measured against, run as its own process:

  python -m engine.bench.baseline --port 18990
"""

from __future__ import annotations

import argparse

import orjson
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def ocpp(ws: WebSocket) -> None:
    offered = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol="ocpp1.6" if "ocpp1.6" in offered else None)
    try:
        while True:
            text = await ws.receive_text()
            try:
                frame = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            if isinstance(frame, list) and len(frame) > 2 and frame[0] == 2:
                await ws.send_text("[3," + orjson.dumps(frame[1]).decode() + ",{}]")
    except WebSocketDisconnect:
        pass


app = Starlette(routes=[WebSocketRoute("/ocpp/{cid}", ocpp)])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    uvicorn.run(app, host=args.host, port=args.port, ws="websockets-sansio", http="httptools", loop=loop,
                lifespan="off", log_level="warning", access_log=False, backlog=4096, server_header=False,
                date_header=False)


if __name__ == "__main__":
    main()
