#!/usr/bin/env bash
# Finds the KEIKO_THREADS setting that serves the most requests per second on this host: starts
# keiko with 1, 2, ... threads (up to the server's CPUs) and measures each with wrk, once with a
# new connection per request (Connection: close, like the k6 scripts) and once with keep-alive.
#
#   scripts/threads.sh [--duration S] [--connections N] [--max-threads N]
#                      [--server-cpus LIST] [--client-cpus LIST] [--images DIR] [--port PORT]
#
# Without CPU lists keiko and wrk share every core, as they would on a host that runs its own load
# generator; with them each is pinned (taskset). Prints a table and the recommended setting.
# Installs wrk when missing; runs $KEIKO_BIN, else the release build.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=10; CONNS=64; MAX=""; SERVER_CPUS=""; CLIENT_CPUS=""; IMAGES=assets/images; PORT=8099
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift ;;
    --connections) CONNS="$2"; shift ;;
    --max-threads) MAX="$2"; shift ;;
    --server-cpus) SERVER_CPUS="$2"; shift ;;
    --client-cpus) CLIENT_CPUS="$2"; shift ;;
    --images) IMAGES="$2"; shift ;;
    --port) PORT="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
  shift
done
if ! [[ "$DURATION" =~ ^[0-9]+$ ]] || [ "$DURATION" -lt 1 ] || [ "$DURATION" -gt 300 ]; then
  usage_error "--duration: 1-300 s"
fi

need_packages wrk curl
KEIKO=$(keiko_bin)

SERVER_PIN=(); CLIENT_PIN=()
[ -n "$SERVER_CPUS" ] && SERVER_PIN=(taskset -c "$SERVER_CPUS")
[ -n "$CLIENT_CPUS" ] && CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
if [ -z "$MAX" ]; then
  MAX=$("${SERVER_PIN[@]}" nproc)
fi
WRK_THREADS=$("${CLIENT_PIN[@]}" nproc); [ "$WRK_THREADS" -gt 4 ] && WRK_THREADS=4

RUN=$(mktemp -d /tmp/keiko-threads.XXXXXX)

# wrk_rps MODE: requests/s of one bounded wrk run against the running keiko
wrk_rps() {
  local hdr=(); [ "$1" = close ] && hdr=(-H "Connection: close")
  "${CLIENT_PIN[@]}" timeout $((DURATION + 30)) wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" "${hdr[@]}" \
    "http://127.0.0.1:$PORT/" >"$RUN/wrk-$t-$1.txt" 2>&1 || true
  awk '/^Requests\/sec:/ {printf "%.0f", $2; found=1} END {if (!found) print 0}' "$RUN/wrk-$t-$1.txt"
}

printf '| KEIKO_THREADS | close req/s | keep-alive req/s |\n|---:|---:|---:|\n' >"$RUN/table.md"
best_close=0; best_t=1; best_keep=0; best_keep_t=1
for t in $(seq 1 "$MAX"); do
  log "KEIKO_THREADS=$t: starting keiko${SERVER_CPUS:+ on CPUs $SERVER_CPUS}"
  KEIKO_ADDR="127.0.0.1:$PORT" KEIKO_THREADS="$t" KEIKO_IMAGES="$IMAGES" KEIKO_DB="$RUN/keiko-$t.db" \
    "${SERVER_PIN[@]}" "$KEIKO" >"$RUN/keiko-$t.log" 2>&1 &
  PID=$!; track_pid "$PID"
  keiko_addr "$RUN/keiko-$t.log" 30 "$PID" >/dev/null   # this keiko listens (the port was free)
  wait_ready "http://127.0.0.1:$PORT" 30 "$PID" "$RUN/keiko-$t.log"
  close=$(wrk_rps close); keep=$(wrk_rps keepalive)
  log "KEIKO_THREADS=$t: close $close req/s, keep-alive $keep req/s"
  printf '| %s | %s | %s |\n' "$t" "$close" "$keep" >>"$RUN/table.md"
  # A thread count must beat the best so far by 3% to count: more threads than needed only add noise.
  if [ "$close" -gt $((best_close * 103 / 100)) ]; then best_close=$close; best_t=$t; fi
  if [ "$keep" -gt $((best_keep * 103 / 100)) ]; then best_keep=$keep; best_keep_t=$t; fi
  stop_pid "$PID"
done

echo
echo "wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s; server CPUs: ${SERVER_CPUS:-all}; wrk CPUs: ${CLIENT_CPUS:-all}"
echo
cat "$RUN/table.md"
echo
echo "Recommended: KEIKO_THREADS=$best_t (new connection per request: $best_close req/s;" \
  "with keep-alive KEIKO_THREADS=$best_keep_t gives $best_keep req/s)"
