#!/usr/bin/env bash
# Connection hogs against a running Switchyard: held HTTP/1.1 requests
# whose body never comes, idle keep-alives, ping-only h2c connections and
# DNS-over-TCP length prefixes, from SOURCES loopback networks (127.0.N.1,
# each its own /24), while a normal client (127.1.0.1, another /24) asks
# /healthcheck and DNS over TCP. Prints how many of the hog connections the
# server kept and how the normal client fared.
#
#   bench/hogs.sh [ADMIN_ADDR] [DNS_ADDR] [CONNECTIONS_PER_SOURCE] [SOURCES]
#   (defaults 127.0.0.1:8081 127.0.0.1:5353 100 24; only loopback targets)
set -euo pipefail
admin="${1:-127.0.0.1:8081}"
dns="${2:-127.0.0.1:5353}"
per="${3:-100}"
sources="${4:-24}"
case "$admin$dns" in
  127.*127.*) ;;
  *) echo "bench/hogs.sh: loopback targets only" >&2; exit 2 ;;
esac
exec python3 - "$admin" "$dns" "$per" "$sources" <<'PY'
import socket, struct, sys, time
admin, dns, per, sources = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def addr(s):
    h, p = s.rsplit(':', 1)
    return (h, int(p))
admin, dns = addr(admin), addr(dns)
held = []
def hold(src, target, first):
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(2)
    try:
        s.connect(target)
        if first:
            s.sendall(first)
        held.append(s)
    except OSError:
        s.close()
kinds = [
    b"POST /api/post_stats HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{",
    b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
]
t0 = time.time()
for i in range(sources):
    src = "127.0.%d.1" % (10 + i)
    for j in range(per):
        hold(src, admin, kinds[j % len(kinds)])
        hold(src, dns, b"\x00\x28")
print("opened %d hog connections from %d sources in %.1f s" % (len(held), sources, time.time() - t0))
time.sleep(1)
def alive(s):
    s.setblocking(False)
    try:
        d = s.recv(4096)
        return not (d == b"" or d.startswith(b"HTTP/1.1 503"))
    except BlockingIOError:
        return True
    except OSError:
        return False
print("hog connections the server still holds after 1 s: %d" % sum(alive(s) for s in held))
ok = fail = 0
worst = 0.0
for _ in range(50):
    t = time.time()
    try:
        c = socket.create_connection(admin, timeout=2, source_address=("127.1.0.1", 0))
        c.sendall(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        r = c.recv(64)
        c.close()
        if r.startswith(b"HTTP/1.1 200"):
            ok += 1
        else:
            fail += 1
    except OSError:
        fail += 1
    worst = max(worst, time.time() - t)
    q = struct.pack(">HHHHHH", 0x4242, 0, 1, 0, 0, 0) + b"\x06static\x0aswitchyard\x04test\x00\x00\x01\x00\x01"
    try:
        c = socket.create_connection(dns, timeout=2, source_address=("127.1.0.1", 0))
        c.sendall(struct.pack(">H", len(q)) + q)
        head = c.recv(2)
        c.close()
        if len(head) == 2:
            ok += 1
        else:
            fail += 1
    except OSError:
        fail += 1
print("normal client: %d answered, %d failed, slowest /healthcheck %.0f ms" % (ok, fail, worst * 1000))
for s in held:
    s.close()
PY
