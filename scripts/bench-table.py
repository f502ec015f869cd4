#!/usr/bin/env python3
# bench.sh's side-by-side table: for each server run (baseline, keiko) reads k6's JSON summary
# RUN/NAME.json and bench.sh's RUN/NAME.facts ("hits-in-DB k6-exit-status server-CPU-seconds"),
# and prints a markdown table of requests/s, latency percentiles, failures, thresholds, the images
# k6 received against the hits in the database, and server CPU per request, then the ratio of
# keiko's requests/s to the baseline's when both ran.
#
#   python3 scripts/bench-table.py RUN SCRIPT THREADS NAME...
import json, sys
run, script, threads, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def match(hits, served, d):
    if hits == served:
        return "yes"
    if hits < served:
        return f"NO: {served - hits:,} hits lost"
    # More hits than k6 counted: requests k6 gave up on (timed out, or cut off when the scenario
    # ended) that the server still answered.
    return f"+{hits - served:,}: answered after k6 gave up on them"

rows = {}
for n in names:
    d = json.load(open(f"{run}/{n}.json"))["metrics"]
    hits, rc, cpu = open(f"{run}/{n}.facts").read().split()
    dur = d["http_req_duration"]["values"]
    reqs = d["http_reqs"]["values"]
    crossed = sorted(f"{m} {e}" for m, info in d.items() for e, t in info.get("thresholds", {}).items() if not t["ok"])
    served = int(d.get("images_served", {}).get("values", {}).get("count", 0))
    rows[n] = [f"{reqs['rate']:,.1f}", f"{int(reqs['count']):,}",
               f"{dur['p(90)']:,.2f}", f"{dur['p(95)']:,.2f}", f"{dur['p(99)']:,.2f}",
               f"{d['http_req_failed']['values']['rate'] * 100:.2f}%",
               "yes" if not crossed else "no: " + ", ".join(crossed),
               f"{served:,}", f"{int(hits):,}", match(int(hits), served, d),
               f"{float(cpu) * 1e6 / max(int(reqs['count']), 1):,.0f}"]
cols = ["requests/s", "requests", "p90 ms", "p95 ms", "p99 ms", "failed", "thresholds passed",
        "200 images (k6)", "hits in DB", "match", "server CPU µs/req"]
print(f"\n{script}, KEIKO_THREADS={threads}\n")
print("| | " + " | ".join(names) + " |")
print("|---|" + "---:|" * len(names))
for i, c in enumerate(cols):
    print(f"| {c} | " + " | ".join(rows[n][i] for n in names) + " |")
if len(names) == 2:
    a, b = (float(rows[n][0].replace(",", "")) for n in names)
    print(f"\nkeiko / baseline requests/s: {b / a:,.1f}x" if a else "")
