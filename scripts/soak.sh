#!/usr/bin/env bash
# Soak test: keeps keiko under steady mixed load for a while and fails (exit 1) if it leaks memory,
# answers with errors, hangs, or loses hits.
#
#   scripts/soak.sh [--duration SECONDS] [--threads N] [--max-growth-mb MB] [--client-cpus LIST]
#
# Installs wrk and curl when missing, runs $KEIKO_BIN or else the release build (cargo build
# --release --bins first), and builds the bad-input client (cargo test --test soak --no-run) before
# the load. Starts keiko on a free 127.0.0.1 port with the bundled images and a fresh database,
# then for the whole duration runs at the same time:
#   - wrk keep-alive clients on GET / (-t1 -c32)
#   - wrk new-connection clients on GET / (Connection: close, -t1 -c16)
#   - a bad-input client (the ignored test bad_input_client in tests/soak.rs, writing
#     badinput.json), one connection per request at a modest rate: malformed requests (400),
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
# Prints a summary table on stdout (scripts/soak-verdict.py); logs, wrk output and the database
# stay in the run directory.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=600; THREADS="${KEIKO_THREADS:-2}"; MAX_GROWTH_MB=8; CLIENT_CPUS="default"
KA_CONNS=32; CLOSE_CONNS=16; SAMPLE_EVERY=2
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --max-growth-mb) MAX_GROWTH_MB="$2"; shift ;;
    --client-cpus) CLIENT_CPUS="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
  shift
done
if ! [[ "$DURATION" =~ ^[0-9]+$ ]] || [ "$DURATION" -lt 10 ] || [ "$DURATION" -gt 86400 ]; then
  usage_error "--duration: 10-86400 s"
fi
[[ "$THREADS" =~ ^[0-9]+$ ]] || usage_error "--threads: a number"
[[ "$MAX_GROWTH_MB" =~ ^[0-9]+([.][0-9]+)?$ ]] || usage_error "--max-growth-mb: a number"
WARMUP=$((DURATION / 3)); [ "$WARMUP" -gt 20 ] && WARMUP=20

# --- tools and binaries --------------------------------------------------------------------------
need_packages wrk curl
command -v python3 >/dev/null || die "missing python3"
BIN=$(keiko_bin)
# Compiled now, so that nothing is compiled during the load.
log "building the bad-input client (cargo test --test soak --no-run)"
cargo test --test soak --no-run --quiet || die "cannot build tests/soak.rs"

if [ "$CLIENT_CPUS" = default ]; then
  CLIENT_CPUS=""
  if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then CLIENT_CPUS=$(($(nproc) - 1)); fi
fi
# taskset execs the command, so $! of a backgrounded "${CLIENT_PIN[@]}" cmd is still our child.
CLIENT_PIN=(); [ -n "$CLIENT_CPUS" ] && CLIENT_PIN=(taskset -c "$CLIENT_CPUS")

RUN=$(mktemp -d /tmp/keiko-soak.XXXXXX)
DB="$RUN/keiko.db"

# --- keiko ---------------------------------------------------------------------------------------
log "starting $BIN on 127.0.0.1 (free port), $THREADS thread(s), database $DB"
KEIKO_ADDR=127.0.0.1:0 KEIKO_THREADS="$THREADS" KEIKO_IMAGES=assets/images KEIKO_DB="$DB" \
  "$BIN" >"$RUN/keiko.log" 2>&1 &
KEIKO_PID=$!; track_pid "$KEIKO_PID"
ADDR=$(keiko_addr "$RUN/keiko.log" 30 "$KEIKO_PID")
URL="http://$ADDR"
# Listening comes first; the load starts once every image is encoded.
wait_ready "$URL" 30 "$KEIKO_PID" "$RUN/keiko.log"
log "keiko (PID $KEIKO_PID) ready on $URL"

fetch() { # fetch PATH: body of a GET on keiko, empty on failure
  curl -sf -m 5 "$URL$1" 2>/dev/null || true
}
metric() { # metric NAME < metrics text: the value of one series (0 when absent)
  awk -v n="$1" '$1 == n {v = $2} END {print (v == "" ? 0 : v)}'
}

# --- load ----------------------------------------------------------------------------------------
RSS_IDLE=$(rss_kb "$KEIKO_PID")
log "load for ${DURATION} s: wrk keep-alive -c$KA_CONNS, wrk close -c$CLOSE_CONNS, bad-input client," \
  "RSS sampler${CLIENT_CPUS:+; clients on CPU(s) $CLIENT_CPUS} (idle RSS $((RSS_IDLE / 1024)) MB)"
LOAD_T0=$EPOCHREALTIME
(
  n=0; max=$((DURATION / SAMPLE_EVERY + 10))
  end=$(awk -v t="$LOAD_T0" -v d="$DURATION" 'BEGIN {printf "%d", t + d}')
  while [ "$n" -lt "$max" ] && [ "${EPOCHREALTIME%.*}" -lt "$end" ] && lib_alive "$KEIKO_PID"; do
    printf '%s %s\n' "$(awk -v a="$LOAD_T0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')" "$(rss_kb "$KEIKO_PID")"
    n=$((n + 1))
    sleep "$SAMPLE_EVERY"
  done
) >"$RUN/rss.txt" &
SAMPLER=$!; track_pid "$SAMPLER"
"${CLIENT_PIN[@]}" timeout $((DURATION + 30)) wrk -t1 -c"$KA_CONNS" -d"${DURATION}s" --timeout 5s \
  "$URL/" >"$RUN/wrk-keep-alive.txt" 2>&1 &
WRK_KA=$!; track_pid "$WRK_KA"
"${CLIENT_PIN[@]}" timeout $((DURATION + 30)) wrk -t1 -c"$CLOSE_CONNS" -d"${DURATION}s" --timeout 5s \
  -H "Connection: close" "$URL/" >"$RUN/wrk-close.txt" 2>&1 &
WRK_CLOSE=$!; track_pid "$WRK_CLOSE"
SOAK_ADDR="$ADDR" SOAK_SECS="$DURATION" SOAK_OUT="$RUN/badinput.json" "${CLIENT_PIN[@]}" \
  timeout $((DURATION + 30)) cargo test --test soak --quiet -- --ignored --exact bad_input_client \
  >"$RUN/badinput.log" 2>&1 &
BAD=$!; track_pid "$BAD"

rc_ka=0; rc_close=0; rc_bad=0
wait "$WRK_KA" || rc_ka=$?
wait "$WRK_CLOSE" || rc_close=$?
RSS_END=$(rss_kb "$KEIKO_PID")   # the end of the load, before anything is released
wait "$BAD" || rc_bad=$?
wait "$SAMPLER" || true
LOAD_SECS=$(awk -v a="$LOAD_T0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')
ALIVE=1; lib_alive "$KEIKO_PID" || ALIVE=0
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
T0=$EPOCHREALTIME
stop_pid "$KEIKO_PID" 5   # SIGKILL (exit status 137) if it still runs 5 s after SIGTERM
EXIT_RC=$STOP_STATUS
EXIT_SECS=$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.2f", b - a}')
IN_DB=$(hits_in_db "$DB" 2>&1) || IN_DB="error: $IN_DB"

# --- verdict: the table, and exit 1 when a check failed ------------------------------------------
SOAK_DURATION=$DURATION SOAK_WARMUP=$WARMUP SOAK_MAX_GROWTH_MB=$MAX_GROWTH_MB SOAK_KA_CONNS=$KA_CONNS \
SOAK_CLOSE_CONNS=$CLOSE_CONNS SOAK_RSS_IDLE=$RSS_IDLE SOAK_RSS_END=$RSS_END SOAK_ALIVE=$ALIVE SOAK_OPEN=$OPEN \
SOAK_EXIT_RC=$EXIT_RC SOAK_EXIT_SECS=$EXIT_SECS SOAK_SERVED=$SERVED SOAK_IN_DB=$IN_DB SOAK_THREADS=$THREADS \
SOAK_BIN=$BIN SOAK_RC_KA=$rc_ka SOAK_RC_CLOSE=$rc_close SOAK_RC_BAD=$rc_bad python3 scripts/soak-verdict.py "$RUN"
