"""Opens N idle MQTT 3.1.1 connections (CONNECT, keepalive 0) to 127.0.0.1:PORT, waits for every
CONNACK, prints "ready", then holds them until stdin closes. Usage: idle_conns.py PORT N"""
import selectors
import socket
import struct
import sys

port, n = int(sys.argv[1]), int(sys.argv[2])


def connect_packet(cid):
    body = struct.pack("!H4sBBH", 4, b"MQTT", 4, 0x02, 0) + struct.pack("!H", len(cid)) + cid
    return bytes([0x10, len(body)]) + body


socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(connect_packet(b"idle-%05d" % i))
    socks.append(s)
sel = selectors.DefaultSelector()
for s in socks:
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
pending, buf = set(socks), {}
while pending:
    for key, _ in sel.select(timeout=30) or [(None, None)]:
        if key is None:
            sys.exit(f"{len(pending)} connections got no CONNACK")
        data = key.fileobj.recv(16)
        if not data:
            sys.exit("a connection was closed")
        buf[key.fileobj] = buf.get(key.fileobj, b"") + data
        if len(buf[key.fileobj]) >= 4:
            if buf[key.fileobj][:4] != b"\x20\x02\x00\x00":
                sys.exit(f"refused: {buf[key.fileobj]!r}")
            sel.unregister(key.fileobj)
            pending.discard(key.fileobj)
print("ready", flush=True)
sys.stdin.read()
