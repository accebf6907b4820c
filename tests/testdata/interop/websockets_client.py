"""Drives the proxy with the asyncio `websockets` library (python3-websockets); prints one JSON
object of results.

Usage: websockets_client.py URL. The library offers permessage-deflate (its default): with the
proxy's --permessage-deflate every message is sent compressed.
"""
import asyncio
import json
import os
import sys

import websockets

url = sys.argv[1]
results = {}


async def receive(ws, count):
    data = b""
    while len(data) < count:
        message = await asyncio.wait_for(ws.recv(), 10)
        if not isinstance(message, bytes):
            raise RuntimeError("expected binary, got %r" % type(message))
        data += message
    return data


def check(name, sent, received):
    results[name] = {"sent": len(sent), "received": len(received), "equal": sent == received}


async def main():
    async with websockets.connect(
        url, subprotocols=["binary"], max_size=16 * 1024 * 1024, open_timeout=10
    ) as ws:
        results["protocol"] = ws.subprotocol
        results["extensions"] = [extension.name for extension in ws.extensions]

        payload = os.urandom(1000)
        await ws.send(payload)
        check("binary", payload, await receive(ws, len(payload)))

        text = "str message \u00e9\u2603"
        await ws.send(text)
        check("text", text.encode("utf-8"), await receive(ws, len(text.encode("utf-8"))))

        parts = [os.urandom(10), os.urandom(70000), os.urandom(1)]

        async def fragments():
            for part in parts:
                yield part
                await asyncio.sleep(0.01)

        await ws.send(fragments())  # an async iterable is sent as one fragmented message
        joined = b"".join(parts)
        check("fragmented", joined, await receive(ws, len(joined)))

        await ws.send(["sync ", "iterable ", "text"])
        check("fragmented_text", b"sync iterable text", await receive(ws, 18))

        big = os.urandom(1024 * 1024)
        await ws.send(big)
        check("one_mib", big, await receive(ws, len(big)))

        pong = await ws.ping(b"abef")
        await asyncio.wait_for(pong, 10)
        results["ping"] = True

        await ws.close(code=1000, reason="done")
        results["close_code"] = ws.close_code
        results["close_reason"] = ws.close_reason


asyncio.run(main())
print(json.dumps(results))
