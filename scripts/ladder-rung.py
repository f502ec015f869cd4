#!/usr/bin/env python3
# One rung of ladder.sh: reads k6's JSON summary of the rung and the k6 process's CPU time (the
# last two words of TIME_FILE: user and system seconds, from bash's `time`), appends the rung's row
# (target and achieved requests/s, p50 and p99 ms, errors, k6 CPU s) to the markdown TABLE, and
# prints "ok", or "fail" when less than 90% of the target rate was achieved or more than 1% of
# the requests failed.
#
#   python3 scripts/ladder-rung.py SUMMARY_JSON RATE DURATION_S TIME_FILE TABLE
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
rate, secs = int(sys.argv[2]), int(sys.argv[3])
cpu = sum(float(x) for x in open(sys.argv[4]).read().split()[-2:])
table = open(sys.argv[5], "a")
reqs = m["http_reqs"]["values"]["count"]
achieved = reqs / secs
d = m["http_req_duration"]["values"]
err = m["http_req_failed"]["values"]["rate"]
table.write(f"| {rate:,} | {achieved:,.0f} | {d['med']:.2f} | {d['p(99)']:.2f} | {err * 100:.2f}% | {cpu:.1f} |\n")
print("fail" if achieved < 0.9 * rate or err > 0.01 else "ok")
