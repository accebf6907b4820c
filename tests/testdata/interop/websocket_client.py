"""Drives the proxy with websocket-client (python3-websocket); prints one JSON object of results.

Usage: websocket_client.py URL. Each check sends data through the proxy to a TCP echo server and
collects the echo (the proxy answers in binary messages of at most 64 KiB).
"""
import json
import os
import sys

import websocket
from websocket import ABNF

url = sys.argv[1]
results = {}


def receive(ws, count):
    data = b""
    while len(data) < count:
        opcode, payload = ws.recv_data()
        if opcode != ABNF.OPCODE_BINARY:
            raise RuntimeError("unexpected opcode %d: %r" % (opcode, payload))
        data += payload
    return data


def check(name, sent, received):
    results[name] = {"sent": len(sent), "received": len(received), "equal": sent == received}


ws = websocket.create_connection(url, timeout=10, subprotocols=["binary"])
results["protocol"] = ws.getsubprotocol()

payload = os.urandom(1000)
ws.send_binary(payload)
check("binary", payload, receive(ws, len(payload)))

text = "h\u00e9llo, text frame \u2603"
ws.send(text)  # the default opcode is TEXT
check("text", text.encode("utf-8"), receive(ws, len(text.encode("utf-8"))))

parts = [os.urandom(100), os.urandom(2000), os.urandom(3)]
ws.send_frame(ABNF.create_frame(parts[0], ABNF.OPCODE_BINARY, fin=0))
ws.send_frame(ABNF.create_frame(parts[1], ABNF.OPCODE_CONT, fin=0))
ws.send_frame(ABNF.create_frame(parts[2], ABNF.OPCODE_CONT, fin=1))
joined = b"".join(parts)
check("fragmented", joined, receive(ws, len(joined)))

text_parts = ["fragmented ", "text \u00e9"]
ws.send_frame(ABNF.create_frame(text_parts[0], ABNF.OPCODE_TEXT, fin=0))
# create_frame only UTF-8-encodes str for OPCODE_TEXT: give continuations bytes.
ws.send_frame(ABNF.create_frame(text_parts[1].encode("utf-8"), ABNF.OPCODE_CONT, fin=1))
joined = "".join(text_parts).encode("utf-8")
check("fragmented_text", joined, receive(ws, len(joined)))

big = os.urandom(1024 * 1024)
ws.send_binary(big)
check("one_mib", big, receive(ws, len(big)))

# Close by hand to see the server's echoed close frame.
ws.send_close(1000, b"done")
opcode, payload = ws.recv_data(control_frame=True)
results["close"] = [opcode, int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8")]
ws.shutdown()
print(json.dumps(results))
