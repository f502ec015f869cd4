#!/usr/bin/env python3
# soak.sh's verdict: reads what the soak left in its run directory (wrk-keep-alive.txt,
# wrk-close.txt, badinput.json, rss.txt, metrics.txt) and the figures soak.sh measured itself
# (SOAK_* environment variables: durations, limits, RSS, exit status, hits), prints the summary
# table and every failed check, and exits 1 when any check failed, else 0.
#
#   SOAK_DURATION=... SOAK_WARMUP=... (see soak.sh) python3 scripts/soak-verdict.py RUN_DIR
import json, os, re, sys
run = sys.argv[1]
env = lambda k: os.environ["SOAK_" + k]
duration, warmup, max_growth_mb = int(env("DURATION")), int(env("WARMUP")), float(env("MAX_GROWTH_MB"))
ka_conns, close_conns = int(env("KA_CONNS")), int(env("CLOSE_CONNS"))
rss_idle_kb, rss_end_kb = int(env("RSS_IDLE")), int(env("RSS_END"))
alive, open_after = int(env("ALIVE")), int(float(env("OPEN") or -1))
exit_rc, exit_secs = int(env("EXIT_RC")), float(env("EXIT_SECS"))
served, in_db_text = int(float(env("SERVED") or 0)), env("IN_DB")
rc = {"keep-alive": int(env("RC_KA")), "close": int(env("RC_CLOSE")), "bad-input": int(env("RC_BAD"))}
failures = []
def check(ok, what):
    if not ok:
        failures.append(what)
    return ok

def wrk(name):
    text = open(f"{run}/wrk-{name}.txt", errors="replace").read()
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+)", text, re.M)
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    n = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r = {"requests": int(m.group(1)) if m else None,
         # wrk prints these two lines only when they are not zero
         "errors": dict(zip(("connect", "read", "write", "timeout"), map(int, e.groups()) if e else (0,) * 4)),
         "non2xx": int(n.group(1)) if n else 0,
         "rps": float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1)) if "Requests/sec" in text else 0.0}
    check(rc[name] == 0 and r["requests"] is not None, f"wrk {name} failed (exit {rc[name]}): see {run}/wrk-{name}.txt")
    check(sum(r["errors"].values()) == 0, f"wrk {name} socket errors: {r['errors']}")
    check(r["non2xx"] == 0, f"wrk {name}: {r['non2xx']} non-2xx responses")
    return r

ka, close = wrk("keep-alive"), wrk("close")
wrk_done = (ka["requests"] or 0) + (close["requests"] or 0)
check(alive == 1, "keiko was not running at the end of the load (see keiko.log)")

# Bad input.
try:
    bad = json.load(open(f"{run}/badinput.json"))
except (OSError, ValueError):
    bad = {"counts": {}, "problems": ["no result (exit %d)" % rc["bad-input"]]}
counts = bad["counts"]
bad_total = sum(sum(c.values()) for c in counts.values())
expected = {"400", "431", "404", "200", "closed", "abandoned", "abandoned-rst"}
unexpected = sum(n for c in counts.values() for k, n in c.items() if k not in expected)
by_outcome = {}
for c in counts.values():
    for k, n in c.items():
        by_outcome[k] = by_outcome.get(k, 0) + n
check(rc["bad-input"] == 0, f"bad-input client exit {rc['bad-input']} (see {run}/badinput.log)")
check(unexpected == 0, f"bad-input: {unexpected} unexpected outcomes, e.g. {bad['problems'][:5]}")
for status in ("400", "431", "404", "200", "abandoned"):
    check(by_outcome.get(status, 0) > 0, f"bad-input: never got {status}")

# Memory.
samples = [tuple(map(float, l.split())) for l in open(f"{run}/rss.txt") if len(l.split()) == 2]
samples = [(t, kb) for t, kb in samples if kb > 0]
after = [kb for t, kb in samples if t >= warmup]
rss_start_kb = after[0] if after else None
all_kb = [kb for _, kb in samples] + ([rss_end_kb] if rss_end_kb else [])
mb = lambda kb: kb / 1024
growth_mb = mb(rss_end_kb - rss_start_kb) if rss_start_kb and rss_end_kb else None
if check(growth_mb is not None, "no RSS samples after the warm-up"):
    check(growth_mb <= max_growth_mb, f"RSS grew {growth_mb:.1f} MB after the warm-up (limit {max_growth_mb:g} MB)")

# Connections, shutdown, hits.
check(open_after == 1, f"{open_after - 1 if open_after > 0 else '?'} connection(s) still open after the clients left")
check(exit_rc == 0, f"keiko exit status {exit_rc} after SIGTERM")
check(exit_secs <= 5.0, f"keiko took {exit_secs:.1f} s to exit after SIGTERM")
try:
    in_db = int(in_db_text)
except ValueError:
    in_db = None
check(in_db is not None, f"cannot read the database: {in_db_text}")
check(served > 0, "keiko_hits_served_total is 0 or missing")
check(in_db == served, f"hits in DB {in_db} != keiko_hits_served_total {served}")
check(served >= wrk_done, f"hits served {served} < GET / responses wrk completed {wrk_done}: hits lost")
check(served - wrk_done <= ka_conns + close_conns,
      f"hits served {served} exceed wrk's {wrk_done} by more than its {ka_conns + close_conns} connections")
metrics = open(f"{run}/metrics.txt").read()
def series(name):
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", metrics, re.M)
    return int(float(m.group(1))) if m else None
# keiko counts a response even when the client left before it was written: its counts may exceed
# the client's by the requests that got no answer.
for status in ("400", "431", "404"):
    got = sum(c.get(status, 0) for c in counts.values())
    lost = sum(c.get(k, 0) for c in counts.values() for k in ("closed", "reset", "timeout", "error"))
    told = series(f'keiko_requests_total{{route="other",status="{status}"}}')
    check(told is not None and got <= told <= got + lost,
          f"keiko counted {told} responses with status {status}, the bad-input client got {got}")
root_200 = series('keiko_requests_total{route="/",status="200"}')
head_200 = counts.get("head", {}).get("200", 0)
if root_200 is not None:
    # Every 200 on / is a hit or a HEAD; a response whose write failed (a client that left) is
    # counted as a request but not as a hit.
    extra = root_200 - served - head_200
    check(0 <= extra <= ka_conns + close_conns,
          f'keiko_requests_total{{route="/",status="200"}} {root_200} != hits {served} + HEAD {head_200}')

def n(x):
    return "?" if x is None else f"{x:,}"
def fmt_err(r):
    return "/".join(str(r["errors"].get(k, "?")) for k in ("connect", "read", "write", "timeout"))
errors = sum(sum(r["errors"].values()) + r["non2xx"] for r in (ka, close)) + unexpected
order = ["400", "431", "404", "200", "closed", "abandoned", "abandoned-rst"]
outcomes = ", ".join(f"{k}: {by_outcome[k]:,}" for k in order + sorted(set(by_outcome) - set(order)) if k in by_outcome)
rows = [
    ("duration", f"{duration} s of load (RSS warm-up {warmup} s), KEIKO_THREADS={env('THREADS')}, {env('BIN')}"),
    ("requests keep-alive", f"{n(ka['requests'])} (wrk -t1 -c{ka_conns}, {ka['rps']:,.0f}/s)"),
    ("requests close", f"{n(close['requests'])} (wrk -t1 -c{close_conns} Connection: close, {close['rps']:,.0f}/s)"),
    ("requests bad-input", f"{bad_total:,} ({outcomes})"),
    ("errors", f"{errors} (socket c/r/w/t keep-alive {fmt_err(ka)}, close {fmt_err(close)}; "
               f"non-2xx {ka['non2xx']}/{close['non2xx']}; bad-input unexpected {unexpected})"),
    ("RSS", (f"start {mb(rss_start_kb):.1f} MB, end {mb(rss_end_kb):.1f} MB ({growth_mb:+.2f} MB, limit {max_growth_mb:g}); "
             f"min {mb(min(all_kb)):.1f}, max {mb(max(all_kb)):.1f}, idle before load {mb(rss_idle_kb):.1f}")
            if growth_mb is not None else "no samples"),
    ("hits", f"served {n(served)}, in DB {n(in_db)}, wrk completed {n(wrk_done)} "
             f"(+{served - wrk_done} in flight, limit {ka_conns + close_conns})"),
    ("shutdown", f"exit {exit_rc} {exit_secs:.2f} s after SIGTERM; open connections after load {max(open_after - 1, 0)}"),
    ("verdict", "PASS" if not failures else "FAIL"),
]
w = max(len(k) for k, _ in rows)
print()
for k, v in rows:
    print(f"  {k:<{w}}  {v}")
for f in failures:
    print(f"  FAIL: {f}")
print(f"\n  run directory: {run}")
sys.exit(1 if failures else 0)
