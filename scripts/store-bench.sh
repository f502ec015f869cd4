#!/usr/bin/env bash
# What object storage saves a fleet: a library's encodings made once for the fleet instead of
# once per node. The library (scripts/make-library.sh's, built when missing) is put into a real
# S3-compatible store on loopback (Garage, started by PID in a temporary directory, installed
# with `cargo install garage --locked` when missing), twice, under two prefixes, and keiko runs
# with --webp lossy:75 and no AVIF backfill (which would take hours on 1,000 photos):
#
#   one node, cold      one node on a prefix without encodings: it encodes everything, publishes it
#   new node, warm      a node with an empty cache joining that prefix: it fetches instead
#   three nodes, cold   three nodes started together on the other prefix without encodings
#
# For each: seconds from exec to /readyz 200 (of every node), the processes' CPU seconds until
# then, the encoder threads' share of it (keiko-encode-*), images encoded and encodings fetched
# (/metrics), and the bytes the nodes copied from the bucket.
#
#   scripts/store-bench.sh [--library DIR] [--threads N] [--encoders N]
#
# keiko is $KEIKO_BIN, else the release build; everything is on 127.0.0.1, every wait bounded.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LIBRARY=target/library; THREADS=1; ENCODERS=2; READY_LIMIT=3600
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --library) LIBRARY="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --encoders) ENCODERS="$2"; shift ;;
    *) usage_error "unknown argument $1" ;;
  esac
  shift
done
[ -d "$LIBRARY" ] || scripts/make-library.sh --out "$LIBRARY"
KEIKO=$(keiko_bin)
RUN=$(mktemp -d /tmp/keiko-store-bench.XXXXXX)
on_exit rm -rf "$RUN"

mkdir "$RUN/garage"
start_garage "$RUN/garage"
photos=("$LIBRARY"/*.jpg)
for prefix in one three; do
  started=$SECONDS
  for f in "${photos[@]}"; do s3_put "$f" "$prefix/$(basename "$f")"; done
  log "put ${#photos[@]} photos into s3://keiko/$prefix in $((SECONDS - started)) s"
done

declare -A PID PORT
start_node() {
  local name="$1" prefix="$2"
  PORT[$name]="$(free_port)"
  KEIKO_ADDR="127.0.0.1:${PORT[$name]}" KEIKO_THREADS="$THREADS" KEIKO_ENCODERS="$ENCODERS" \
    KEIKO_IMAGES="s3://keiko/$prefix" KEIKO_DB="$RUN/$name.db" KEIKO_CACHE_DIR="$RUN/$name-cache" \
    KEIKO_WEBP=lossy:75 KEIKO_AVIF_MAX_MEGAPIXELS=0 KEIKO_LOG=info "$KEIKO" > "$RUN/$name.log" 2>&1 &
  PID[$name]=$!
  track_pid "${PID[$name]}"
}
metric() { curl -s --max-time 5 "http://127.0.0.1:${PORT[$1]}/metrics" | awk -v s="$2" '$1 == s { print $2 }'; }
# The CPU seconds of PID's threads whose name starts with PREFIX.
threads_cpu() {
  local ticks=0 task comm stat fields
  for task in /proc/"$1"/task/*; do
    comm="$(cat "$task/comm" 2>/dev/null)" || continue
    [[ "$comm" == "$2"* ]] || continue
    read -r stat 2>/dev/null <"$task/stat" || continue
    read -r -a fields <<<"${stat##*) }"
    ticks=$((ticks + fields[11] + fields[12]))
  done
  awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }'
}
# until_ready NAME...: waits for every node's /readyz; prints the seconds since $T0.
until_ready() {
  local name
  for name in "$@"; do
    wait_ready "http://127.0.0.1:${PORT[$name]}" "$READY_LIMIT" "${PID[$name]}" "$RUN/$name.log"
  done
  awk -v t0="$T0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }'
}
# row LABEL SECONDS NAME...: one line of the table, summed over the nodes.
row() {
  local label="$1" ready="$2" cpu=0 enc=0 encoded=0 fetched=0 bytes=0 name
  shift 2
  for name in "$@"; do
    cpu=$(awk -v a="$cpu" -v b="$(cpu_seconds "${PID[$name]}")" 'BEGIN { print a + b }')
    enc=$(awk -v a="$enc" -v b="$(threads_cpu "${PID[$name]}" keiko-encode)" 'BEGIN { print a + b }')
    encoded=$((encoded + $(metric "$name" keiko_cache_misses_total)))
    fetched=$((fetched + $(metric "$name" keiko_store_encodings_fetched_total)))
    bytes=$((bytes + $(metric "$name" keiko_store_download_bytes_total)))
  done
  printf '| %s | %s s | %.1f s | %.1f s | %d | %d | %.0f MB |\n' "$label" "$ready" "$cpu" "$enc" \
    "$encoded" "$fetched" "$(awk -v b="$bytes" 'BEGIN { print b / 1e6 }')" >> "$RUN/table"
  log "$(tail -n 1 "$RUN/table")"
}
stop_nodes() { local name; for name in "$@"; do stop_pid "${PID[$name]}" 30; done; }

echo "| run | /readyz 200 (all) | CPU | of it encoders | encoded | fetched | copied from the bucket |" > "$RUN/table"
echo "|---|---:|---:|---:|---:|---:|---:|" >> "$RUN/table"

log "one node, cold, on s3://keiko/one"
T0=$(date +%s.%N); start_node a one
row "one node, cold" "$(until_ready a)" a
stop_nodes a

log "a new node, warm, on s3://keiko/one"
T0=$(date +%s.%N); start_node b one
row "new node joining, warm" "$(until_ready b)" b
stop_nodes b

log "three nodes, cold, started together on s3://keiko/three"
T0=$(date +%s.%N); for n in c1 c2 c3; do start_node "$n" three; done
row "three nodes, cold, together" "$(until_ready c1 c2 c3)" c1 c2 c3
stop_nodes c1 c2 c3

echo
echo "keiko on s3:// (Garage on loopback), ${#photos[@]} photos of $LIBRARY, --webp lossy:75, no AVIF,"
echo "$THREADS loop thread(s) and $ENCODERS encoders per node, $(nproc) cores shared by every node"
cat "$RUN/table"
