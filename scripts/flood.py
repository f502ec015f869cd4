#!/usr/bin/env python3
"""An abusive render flood for scripts/flood-bench.sh: for SECONDS, ask keiko at ADDR for
renditions nobody has asked for before (distinct sizes up to 5000x5000, blur 10) and hang up at
once, RATE times a second; every tenth request instead waits for its answer. Prints one JSON line:
how many were sent and the statuses of the ones that waited.

    flood.py ADDR NAME SECONDS RATE
"""
import json
import socket
import sys
import time

addr, name, seconds, rate = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
host, port = addr.rsplit(":", 1)
end = time.monotonic() + seconds
sent, statuses, n = 0, {}, 0
waiting = []
while time.monotonic() < end:
    n += 1
    side = 4000 + n % 1000
    request = f"GET /images/{name}/{side}/{side - n % 7}?blur=10 HTTP/1.1\r\nHost: flood\r\n\r\n".encode()
    try:
        s = socket.create_connection((host, int(port)), timeout=2)
        s.sendall(request)
        sent += 1
        if n % 10 == 0:
            s.setblocking(False)
            waiting.append((s, time.monotonic()))
        else:
            s.close()
    except OSError:
        pass
    still = []
    for s, since in waiting:
        try:
            head = s.recv(64)
            status = head.split(b" ")[1].decode() if head else "closed"
            statuses[status] = statuses.get(status, 0) + 1
            s.close()
        except BlockingIOError:
            if time.monotonic() - since > 30:
                statuses["timeout"] = statuses.get("timeout", 0) + 1
                s.close()
            else:
                still.append((s, since))
        except OSError:
            statuses["error"] = statuses.get("error", 0) + 1
            s.close()
    waiting = still
    time.sleep(1.0 / rate)
for s, _ in waiting:
    statuses["unanswered"] = statuses.get("unanswered", 0) + 1
    s.close()
print(json.dumps({"sent": sent, "waited": statuses}))
