#!/usr/bin/python3
"""WebSocket peers for xlb's end-to-end tests (Debian python3-websockets).

server --port P --name NAME
    Listens on 127.0.0.1:P. Each connection first gets the text message
    "hello from NAME path=PATH", then every message comes back unchanged
    (text as text, binary as binary). Prints "ready" once listening.

client --url URL --messages N
    Connects, reads the hello, sends N messages (text and binary of varied
    sizes, one of 512 KiB), checks that each comes back unchanged and in
    order, closes with 1000, and prints one JSON line with what happened.
"""
import argparse
import asyncio
import json
import os
import sys

import websockets


async def serve(port, name):
    async def handler(ws, path=None):
        if path is None:  # websockets >= 10.1 passes only the connection
            path = ws.path
        await ws.send(f"hello from {name} path={path}")
        async for msg in ws:
            await ws.send(msg)

    async with websockets.serve(handler, "127.0.0.1", port, max_size=None, compression=None):
        print("ready", flush=True)
        await asyncio.Future()


def message(i):
    """The i-th message: alternately text and binary, of varied sizes."""
    if i == 7:
        return os.urandom(512 * 1024)
    if i % 2 == 0:
        return f"text-{i}-" + "x" * (i * 37 % 3000)
    return bytes((i + k) % 256 for k in range(i * 131 % 70000 + 1))


async def client(url, n):
    report = {"hello": None, "sent": 0, "echoed": 0, "mismatches": [], "bytes": 0,
              "close_code": None, "error": None}
    try:
        async with websockets.connect(url, max_size=None, compression=None,
                                      open_timeout=10, close_timeout=5) as ws:
            report["hello"] = await asyncio.wait_for(ws.recv(), 10)
            for i in range(n):
                m = message(i)
                await ws.send(m)
                report["sent"] += 1
                back = await asyncio.wait_for(ws.recv(), 10)
                if back == m:
                    report["echoed"] += 1
                    report["bytes"] += len(m)
                else:
                    report["mismatches"].append(
                        {"i": i, "type_sent": type(m).__name__, "type_back": type(back).__name__,
                         "len_sent": len(m), "len_back": len(back)})
            await ws.close(code=1000, reason="done")
            report["close_code"] = ws.close_code
    except Exception as e:  # reported, the test decides
        report["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(report), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", required=True)
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--messages", type=int, default=100)
    a = p.parse_args()
    if a.cmd == "server":
        asyncio.run(serve(a.port, a.name))
    else:
        asyncio.run(client(a.url, a.messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
