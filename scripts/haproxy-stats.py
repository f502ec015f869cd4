#!/usr/bin/env python3
# fleet.sh's view of HAProxy: asks its stats socket for "show stat" (CSV, one row per proxy and
# server, the header line starting with "# ") and prints, for each server of the backend "keiko"
# whose name starts with "node", one line: "NAME 2XX CONNECT_ERRORS RETRIES REDISPATCHES"
# (the columns hrsp_2xx, econ, wretr and wredis; an empty one as 0).
#
#   python3 scripts/haproxy-stats.py SOCKET
import csv, socket, sys

s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
lines = out.decode().splitlines()
rows = csv.DictReader([lines[0].removeprefix("# ")] + lines[1:])
for row in rows:
    if row["pxname"] == "keiko" and row["svname"].startswith("node"):
        print(row["svname"], *(row[c] or "0" for c in ("hrsp_2xx", "econ", "wretr", "wredis")))
