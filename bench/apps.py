"""The baseline servers, each run as ``python -m bench.apps NAME PORT_FILE`` in its own process.

- ``bare``: a Starlette endpoint that reads the body and answers 200. Nothing is verified or
  stored: the HTTP ceiling of Starlette + uvicorn on this machine.
- ``naive``: the design users write first, Flask style: a synchronous (``def``) handler, run on
  Starlette's thread pool, that verifies the HMAC, creates a boto3 client for the request and
  PUTs one object per webhook. Durable like shopipe (200 after the PUT), without batching.

- ``sink``: the forward phase's destination (bench.forward): plain asyncio, keep-alive, reads
  each request and answers 200 in one write. A uvicorn app writes its answer's head and body
  apart and, against httpx on loopback, costs a delayed ACK (~40 ms) a request; Node, nginx or
  Puma in front of an app do not, and neither does this.

``bare`` and ``naive`` are served like the receiver (uvicorn, asyncio loop, h11, no access
log); each app binds port 0 and writes the port to PORT_FILE once listening.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import anyio.from_thread
import boto3
import uvicorn
from botocore.config import Config
from shopipe.httpops import bind
from shopipe.shopify import shopify_headers, signature_in, verify
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PATH = "/webhooks/shopify"


def bare_app() -> Starlette:
    async def receive(request: Request) -> Response:
        await request.body()
        return Response(status_code=200)

    return Starlette(routes=[Route(PATH, receive, methods=["POST"])])


def naive_app(env: dict[str, str]) -> Starlette:
    secret = env["BENCH_SHOPIFY_SECRET"]
    bucket = env["BENCH_S3_BUCKET"]

    def receive(request: Request) -> Response:
        # A def endpoint runs on a worker thread; reading the body hops back to the loop, as
        # Flask's request.get_data() would read the socket.
        body = anyio.from_thread.run(request.body)
        if not verify(body, signature_in(shopify_headers(request.headers.raw)), [secret]):
            return Response(status_code=401)
        # The default session, as `boto3.client("s3")` in a handler: its model cache is shared,
        # so a client costs milliseconds, not the ~150 ms of a fresh Session.
        client = boto3.client(
            "s3",
            endpoint_url=env["BENCH_S3_ENDPOINT"],
            region_name="us-east-1",
            aws_access_key_id=env["BENCH_S3_ACCESS_KEY"],
            aws_secret_access_key=env["BENCH_S3_SECRET_KEY"],
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        client.put_object(Bucket=bucket, Key=f"naive/{uuid.uuid4().hex}.json", Body=body)
        return Response(status_code=200)

    return Starlette(routes=[Route(PATH, receive, methods=["POST"])])


async def serve(app: Starlette, port_file: Path) -> None:
    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    # Poll (bounded) until uvicorn has started, then publish the port atomically.
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(sock.getsockname()[1]))
    os.replace(tmp, port_file)
    await task


async def _sink_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:  # keep-alive: requests one after another on the connection
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def sink(port_file: Path) -> None:
    server = await asyncio.start_server(_sink_one, sock=bind("127.0.0.1", 0))
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(server.sockets[0].getsockname()[1]))
    os.replace(tmp, port_file)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    name, port_file = argv[0], Path(argv[1])
    if name == "sink":
        asyncio.run(sink(port_file))
        return 0
    app = bare_app() if name == "bare" else naive_app(dict(os.environ))
    asyncio.run(serve(app, port_file))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
