"""Opens N idle MQTT connections (CONNECT, keepalive 0) to 127.0.0.1:PORT, waits for every
CONNACK, prints "ready", then holds them until stdin closes.
Usage: idle_conns.py [--v5] PORT N   (--v5: MQTT 5.0 CONNECTs instead of 3.1.1)"""
import argparse
import selectors
import socket
import struct
import sys

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--v5", action="store_true", help="connect with MQTT 5.0 (default 3.1.1)")
ap.add_argument("port", type=int)
ap.add_argument("n", type=int)
args = ap.parse_args()
port, n = args.port, args.n


def connect_packet(cid):
    level = 5 if args.v5 else 4
    body = struct.pack("!H4sBBH", 4, b"MQTT", level, 0x02, 0)
    if args.v5:
        body += b"\x00"  # no CONNECT properties
    body += struct.pack("!H", len(cid)) + cid
    return bytes([0x10, len(body)]) + body


def accepted(buf):
    """A whole CONNACK with reason 0 (MQTT 5's carries properties after it)."""
    if len(buf) < 2 or buf[0] != 0x20 or len(buf) < 2 + buf[1]:
        return None
    return buf[3] == 0


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
        data = key.fileobj.recv(64)
        if not data:
            sys.exit("a connection was closed")
        buf[key.fileobj] = buf.get(key.fileobj, b"") + data
        ok = accepted(buf[key.fileobj])
        if ok is False:
            sys.exit(f"refused: {buf[key.fileobj]!r}")
        if ok:
            sel.unregister(key.fileobj)
            pending.discard(key.fileobj)
print("ready", flush=True)
sys.stdin.read()
