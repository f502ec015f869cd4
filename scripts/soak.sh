#!/usr/bin/env bash
# Soak test: keeps keiko under steady mixed load for a while and fails (exit 1) if it leaks memory,
# answers with errors, hangs, or loses hits.
#
#   scripts/soak.sh [--duration SECONDS] [--threads N] [--max-growth-mb MB] [--client-cpus LIST]
#
# Installs wrk when missing and builds the release binary when it is missing ($KEIKO_BIN, default
# ./target/release/keiko). Starts keiko on a free 127.0.0.1 port with the bundled images and a fresh
# database, then for the whole duration runs at the same time:
#   - wrk keep-alive clients on GET / (-t1 -c32)
#   - wrk new-connection clients on GET / (Connection: close, -t1 -c16)
#   - a bad-input client, one connection per request at a modest rate: malformed requests (400),
#     heads over 8 KiB or 64 lines (431), a GET with a body (400), unknown paths (404), HEAD / (200,
#     no body), and slow partial heads that it abandons (closed, or reset)
#   - a sampler of keiko's RSS (VmRSS) every 2 s
# Then it waits for the connections to close, reads /metrics, stops keiko with SIGTERM (exit 0 within
# 5 s) and compares the hits in the database with keiko_hits_served_total and with what wrk counted.
# Fails if any of these does not hold:
#   - RSS grows by more than --max-growth-mb (default 8) from the end of the warm-up (20 s into the
#     load, a third of it for short runs) to the end of the load
#   - wrk reports socket errors (connect, read, write, timeout) or non-2xx responses
#   - the bad-input client gets an unexpected status, a reset, or no answer within 5 s
#   - connections stay open after the clients are gone
#   - keiko does not exit 0 within 5 s of SIGTERM
#   - SELECT sum(count) FROM hits != keiko_hits_served_total, or fewer hits than responses wrk
#     completed, or more than that plus one per wrk connection (requests in flight when wrk stopped)
#   --duration S       seconds of load (default 600)
#   --threads N        KEIKO_THREADS (default: $KEIKO_THREADS, else 2)
#   --max-growth-mb MB allowed RSS growth (default 8)
#   --client-cpus LIST pin the load clients with taskset (default: the last CPU when there are two
#                      or more, so keiko has at least one core to itself; "" for no pinning)
# Prints a summary table on stdout; logs, wrk output and the database stay in the run directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=600; THREADS="${KEIKO_THREADS:-2}"; MAX_GROWTH_MB=8; CLIENT_CPUS="default"
KA_CONNS=32; CLOSE_CONNS=16; SAMPLE_EVERY=2
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --max-growth-mb) MAX_GROWTH_MB="$2"; shift ;;
    --client-cpus) CLIENT_CPUS="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 10 ] && [ "$DURATION" -le 86400 ] \
  || { echo "--duration: 10-86400 s" >&2; exit 2; }
[[ "$THREADS" =~ ^[0-9]+$ ]] || { echo "--threads: a number" >&2; exit 2; }
[[ "$MAX_GROWTH_MB" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "--max-growth-mb: a number" >&2; exit 2; }
WARMUP=$((DURATION / 3)); [ "$WARMUP" -gt 20 ] && WARMUP=20

log() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- tools and binary ----------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk (apt-get)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq wrk >/dev/null 2>&1 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk >/dev/null; }
fi
for t in wrk python3; do command -v "$t" >/dev/null || die "missing $t"; done
if [ -n "${KEIKO_BIN:-}" ]; then
  BIN="$KEIKO_BIN"
  [ -x "$BIN" ] || die "KEIKO_BIN=$BIN is not an executable"
else
  BIN=./target/release/keiko
  if [ ! -x "$BIN" ]; then
    log "building $BIN"
    cargo build --release --quiet --bin keiko
  fi
fi

if [ "$CLIENT_CPUS" = default ]; then
  CLIENT_CPUS=""
  if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then CLIENT_CPUS=$(($(nproc) - 1)); fi
fi
# taskset execs the command, so $! of a backgrounded "${CLIENT_PIN[@]}" cmd is still our child.
CLIENT_PIN=(); [ -n "$CLIENT_CPUS" ] && CLIENT_PIN=(taskset -c "$CLIENT_CPUS")

RUN=$(mktemp -d /tmp/keiko-soak.XXXXXX)
DB="$RUN/keiko.db"
# Everything this script starts, so that cleanup ends exactly those (by PID) and nothing else.
KEIKO_PID=""; CLIENT_PIDS=()
cleanup() {
  local p
  for p in "${CLIENT_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null; done
  if [ -n "$KEIKO_PID" ] && kill -0 "$KEIKO_PID" 2>/dev/null; then
    kill -TERM "$KEIKO_PID"
    for _ in $(seq 1 50); do kill -0 "$KEIKO_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$KEIKO_PID" 2>/dev/null && kill -KILL "$KEIKO_PID"
  fi
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- keiko ---------------------------------------------------------------------------------------
log "starting $BIN on 127.0.0.1 (free port), $THREADS thread(s), database $DB"
KEIKO_ADDR=127.0.0.1:0 KEIKO_THREADS="$THREADS" KEIKO_IMAGES=assets/images KEIKO_DB="$DB" \
  "$BIN" >"$RUN/keiko.log" 2>&1 &
KEIKO_PID=$!
for _ in $(seq 1 300); do
  # Listening comes first; the load starts once every image is encoded.
  grep -qs "library complete" "$RUN/keiko.log" && break
  kill -0 "$KEIKO_PID" 2>/dev/null || die "keiko exited during startup: $(tail -3 "$RUN/keiko.log")"
  sleep 0.1
done
ADDR=$(sed -n 's|.*ready: listening on http://\([^,]*\),.*|\1|p' "$RUN/keiko.log" | head -1)
[ -n "$ADDR" ] || die "keiko did not encode its library within 30 s: $(tail -3 "$RUN/keiko.log")"
URL="http://$ADDR"
log "keiko (PID $KEIKO_PID) ready on $URL"

rss_kb() { # rss_kb PID: VmRSS in kB, 0 when the process is gone
  local kb; kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null) || true; echo "${kb:-0}"
}
fetch() { # fetch PATH: body of a GET on keiko, empty on failure
  python3 - "$URL$1" <<'PY' 2>/dev/null || true
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
    sys.stdout.write(r.read().decode())
PY
}
metric() { # metric NAME < metrics text: the value of one series (0 when absent)
  awk -v n="$1" '$1 == n {v = $2} END {print (v == "" ? 0 : v)}'
}

# --- the bad-input client ------------------------------------------------------------------------
cat >"$RUN/badinput.py" <<'PY'
"""Sends bad and odd requests to keiko, each on its own connection, and counts the answers."""
import json, re, socket, struct, sys, threading, time

host, port = sys.argv[1].rsplit(":", 1)
port, duration, out = int(port), float(sys.argv[2]), sys.argv[3]
TIMEOUT = 5.0            # longest wait for any answer: more is a hang
PAUSE = 0.02             # between two fast cases: about 40 requests/s
deadline = time.monotonic() + duration
max_cases = int(duration * 100) + 100

big = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (9 * 1024) + b"\r\n\r\n"
many = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(100)) + b"\r\n"
CASES = [  # name, raw request, expected status
    ("malformed", b"GARBAGE\r\n\r\n", 400),
    ("bad-version", b"GET / HTTP/9.9\r\nHost: t\r\n\r\n", 400),
    ("no-host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("cl-and-te", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", 400),
    ("binary", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 TLS hello\r\n\r\n", 400),
    ("get-with-body", b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd", 400),
    ("oversized-head", big, 431),
    ("too-many-headers", many, 431),
    ("unknown-path", b"GET /no/such/thing?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 404),
    ("head", b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 200),
]
lock = threading.Lock()
counts = {}      # case -> outcome -> n
problems = []    # first few unexpected outcomes, for the log


def note(case, outcome, ok, detail=""):
    with lock:
        c = counts.setdefault(case, {})
        c[outcome] = c.get(outcome, 0) + 1
        if not ok and len(problems) < 20:
            problems.append(f"{case}: {outcome} {detail}".strip())


def exchange(raw):
    """Sends raw, reads until the server closes. Returns (outcome, data)."""
    try:
        s = socket.create_connection((host, port), timeout=TIMEOUT)
    except OSError as e:
        return f"connect-error", repr(e).encode()
    try:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it may have answered before reading it all: read what it sent
        data = b""
        while len(data) < (1 << 20):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return "answered" if data else "closed", data
    except socket.timeout:
        return "timeout", b""
    except ConnectionResetError:
        return "reset", b""
    except OSError as e:
        return "error", repr(e).encode()
    finally:
        s.close()


def fast():
    n = 0
    while time.monotonic() < deadline and n < max_cases:
        name, raw, want = CASES[n % len(CASES)]
        n += 1
        outcome, data = exchange(raw)
        if outcome == "answered":
            m = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
            if not m:
                note(name, "garbled", False, repr(data[:60]))
            else:
                status = int(m.group(1))
                head, _, body = data.partition(b"\r\n\r\n")
                ok = status == want
                if ok and name == "head":
                    ok = body == b"" and b"\r\ncontent-type: image/webp" in head.lower()
                note(name, str(status) if ok or name != "head" or status != 200 else "200-bad-head",
                     ok, repr(data[:80]))
        else:
            # A clean close (no answer) is acceptable for bad input; a hang or reset is not.
            note(name, outcome, outcome == "closed", data[:80].decode(errors="replace"))
        time.sleep(PAUSE)


def slow(seed):
    """Starts a request head, sends a little more a moment later, then abandons it."""
    n = seed
    while time.monotonic() < deadline and n < max_cases:
        n += 1
        try:
            s = socket.create_connection((host, port), timeout=TIMEOUT)
        except OSError as e:
            note("slow-partial-head", "connect-error", False, repr(e))
            time.sleep(0.5)
            continue
        try:
            s.sendall(b"GET / HT")
            time.sleep(0.3)
            s.sendall(b"TP/1.1\r\nHost: t\r\nX-Slow: ")
            time.sleep(0.3)
            s.settimeout(0.05)
            try:
                early = s.recv(4096)
                # keiko answers a partial head only when the header timeout (10 s) expires.
                note("slow-partial-head", "answered-early" if early else "closed-early", False, repr(early[:60]))
            except socket.timeout:
                if n % 2:  # every other one is abandoned with a reset instead of a FIN
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    note("slow-partial-head", "abandoned-rst", True)
                else:
                    note("slow-partial-head", "abandoned", True)
        except OSError as e:
            note("slow-partial-head", "error", False, repr(e))
        finally:
            s.close()
        time.sleep(0.1)


threads = [threading.Thread(target=fast)] + [threading.Thread(target=slow, args=(i,)) for i in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
json.dump({"counts": counts, "problems": problems}, open(out, "w"), indent=1)
PY

# --- load ----------------------------------------------------------------------------------------
RSS_IDLE=$(rss_kb "$KEIKO_PID")
log "load for ${DURATION} s: wrk keep-alive -c$KA_CONNS, wrk close -c$CLOSE_CONNS, bad-input client," \
  "RSS sampler${CLIENT_CPUS:+; clients on CPU(s) $CLIENT_CPUS} (idle RSS $((RSS_IDLE / 1024)) MB)"
LOAD_T0=$EPOCHREALTIME
(
  n=0; max=$((DURATION / SAMPLE_EVERY + 10))
  end=$(awk -v t="$LOAD_T0" -v d="$DURATION" 'BEGIN {printf "%d", t + d}')
  while [ "$n" -lt "$max" ] && [ "${EPOCHREALTIME%.*}" -lt "$end" ] && kill -0 "$KEIKO_PID" 2>/dev/null; do
    printf '%s %s\n' "$(awk -v a="$LOAD_T0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')" "$(rss_kb "$KEIKO_PID")"
    n=$((n + 1))
    sleep "$SAMPLE_EVERY"
  done
) >"$RUN/rss.txt" &
CLIENT_PIDS+=($!)
"${CLIENT_PIN[@]}" timeout $((DURATION + 30)) wrk -t1 -c"$KA_CONNS" -d"${DURATION}s" --timeout 5s \
  "$URL/" >"$RUN/wrk-keep-alive.txt" 2>&1 &
WRK_KA=$!; CLIENT_PIDS+=($WRK_KA)
"${CLIENT_PIN[@]}" timeout $((DURATION + 30)) wrk -t1 -c"$CLOSE_CONNS" -d"${DURATION}s" --timeout 5s \
  -H "Connection: close" "$URL/" >"$RUN/wrk-close.txt" 2>&1 &
WRK_CLOSE=$!; CLIENT_PIDS+=($WRK_CLOSE)
"${CLIENT_PIN[@]}" timeout $((DURATION + 30)) python3 "$RUN/badinput.py" "$ADDR" "$DURATION" "$RUN/badinput.json" \
  >"$RUN/badinput.log" 2>&1 &
BAD=$!; CLIENT_PIDS+=($BAD)

rc_ka=0; rc_close=0; rc_bad=0
wait "$WRK_KA" || rc_ka=$?
wait "$WRK_CLOSE" || rc_close=$?
RSS_END=$(rss_kb "$KEIKO_PID")   # the end of the load, before anything is released
wait "$BAD" || rc_bad=$?
wait "${CLIENT_PIDS[0]}" || true
CLIENT_PIDS=()
LOAD_SECS=$(awk -v a="$LOAD_T0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')
ALIVE=1; kill -0 "$KEIKO_PID" 2>/dev/null || ALIVE=0
log "load done after $LOAD_SECS s (wrk exit $rc_ka/$rc_close, bad-input exit $rc_bad)"

# --- accounting ----------------------------------------------------------------------------------
# Every client is gone: the only open connection left should be the /metrics request itself.
OPEN=-1; T0=$EPOCHREALTIME
for _ in $(seq 1 50); do
  OPEN=$(fetch /metrics | metric keiko_open_connections)
  [ "$OPEN" = 1 ] && break
  sleep 0.1
done
log "open connections: $((OPEN - 1)) after $(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}') s"
fetch /metrics >"$RUN/metrics.txt"
SERVED=$(metric keiko_hits_served_total <"$RUN/metrics.txt")
log "stopping keiko (SIGTERM)"
T0=$EPOCHREALTIME; EXIT_RC=-1
if [ "$ALIVE" = 1 ]; then
  kill -TERM "$KEIKO_PID"
  for _ in $(seq 1 50); do kill -0 "$KEIKO_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$KEIKO_PID" 2>/dev/null; then
    log "keiko still running 5 s after SIGTERM: killing it"
    kill -KILL "$KEIKO_PID"
  fi
fi
wait "$KEIKO_PID" && EXIT_RC=0 || EXIT_RC=$?
EXIT_SECS=$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.2f", b - a}')
KEIKO_PID=""
if command -v sqlite3 >/dev/null; then
  IN_DB=$(sqlite3 "$DB" 'SELECT coalesce(sum(count), 0) FROM hits' 2>&1) || IN_DB="error: $IN_DB"
else
  IN_DB=$(python3 -c 'import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute("SELECT coalesce(sum(count), 0) FROM hits").fetchone()[0])' "$DB" 2>&1) \
    || IN_DB="error: $IN_DB"
fi

# --- verdict -------------------------------------------------------------------------------------
set +e
SOAK_DURATION=$DURATION SOAK_WARMUP=$WARMUP SOAK_MAX_GROWTH_MB=$MAX_GROWTH_MB SOAK_KA_CONNS=$KA_CONNS \
SOAK_CLOSE_CONNS=$CLOSE_CONNS SOAK_RSS_IDLE=$RSS_IDLE SOAK_RSS_END=$RSS_END SOAK_ALIVE=$ALIVE SOAK_OPEN=$OPEN \
SOAK_EXIT_RC=$EXIT_RC SOAK_EXIT_SECS=$EXIT_SECS SOAK_SERVED=$SERVED SOAK_IN_DB=$IN_DB SOAK_THREADS=$THREADS \
SOAK_BIN=$BIN SOAK_RC_KA=$rc_ka SOAK_RC_CLOSE=$rc_close SOAK_RC_BAD=$rc_bad python3 - "$RUN" <<'PY'
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
PY
VERDICT=$?
set -e
exit "$VERDICT"
