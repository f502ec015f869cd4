#!/usr/bin/env bash
# How keiko's start-up, memory and bytes grow with the library: for each encoding mode, a cold
# start (empty cache) and a warm restart (same cache) on a large library, reporting
#
#   first image   time from exec to the first 200 on GET /
#   ready         time from exec to /readyz 200 (every image encoded, or served from the cache)
#   encoded       images encoded (keiko_encode_duration_seconds_count; 0 on a warm restart)
#   CPU/image     keiko's user+system CPU from exec to ready, divided by the images encoded
#   RSS           VmRSS once ready and idle (RssAnon + RssFile: mapped cache files that were read)
#   cache         bytes in the cache directory
#   bytes/resp    mean WebP body (keiko_library_body_bytes / ready images)
#   p99 (cold)    with --load: p99 latency of a light constant-rate load (k6 and scripts/k6/light.js,
#                 RATE req/s of GET / on new connections) while the cold encode runs, next to the
#                 same load once idle
#
#   scripts/library-bench.sh [--library DIR] [--modes lossless,lossy:75,auto] [--load RATE]
#                            [--threads N] [--out FILE]
#
# The library defaults to target/library, built by scripts/make-library.sh when missing. keiko is
# $KEIKO_BIN, else the release build; everything runs on 127.0.0.1 and every wait is bounded.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LIBRARY=target/library; MODES=lossless,lossy:75,auto; RATE=0; THREADS=0; OUT=""
PORT=18350; READY_LIMIT=3600
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --library) LIBRARY="$2"; shift ;;
    --modes) MODES="$2"; shift ;;
    --load) RATE="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    *) usage_error "unknown argument $1" ;;
  esac
  shift
done

[ -d "$LIBRARY" ] || scripts/make-library.sh --out "$LIBRARY"
KEIKO=$(keiko_bin)
if [ "$RATE" != 0 ]; then need_k6; fi

RUN=$(mktemp -d /tmp/keiko-library-bench.XXXXXX)
on_exit rm -rf "$RUN"

now_ms() { date +%s%3N; }
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT$1" || true; }
metric() { curl -s --max-time 2 "http://127.0.0.1:$PORT/metrics" | awk -v s="$1" '$1 == s { print $2 }'; }
rss_mb() { awk -v kb="$(rss_kb "$PID" "$1")" 'BEGIN { printf "%.1f", kb / 1024 }'; }

# Waits for `path` to answer 200; prints the milliseconds since $T0. A measurement, so it polls
# every 10 ms (wait_ready polls every 100 ms).
wait_200() {
  local deadline=$(( $(now_ms) + READY_LIMIT * 1000 ))
  until [ "$(status "$1")" = 200 ]; do
    lib_alive "$PID" || die "keiko exited: $(tail -n 3 "$RUN/keiko.log")"
    [ "$(now_ms)" -lt "$deadline" ] || die "no 200 on $1 within ${READY_LIMIT}s"
    sleep 0.01
  done
  echo $(( $(now_ms) - T0 ))
}

start_keiko() { # mode cache
  T0=$(now_ms)
  KEIKO_ADDR=127.0.0.1:$PORT KEIKO_THREADS=$THREADS KEIKO_IMAGES="$LIBRARY" KEIKO_DB="$RUN/k.db" \
    KEIKO_CACHE_DIR="$2" KEIKO_WEBP="$1" KEIKO_LOG=warn "$KEIKO" 2>>"$RUN/keiko.log" &
  PID=$!; track_pid "$PID"
}

# p99 in ms of RATE req/s of GET / for S seconds, on new connections (k6 constant arrival rate),
# then the requests made and how many failed.
light_load() {
  RATE="$RATE" DURATION="$1s" KEIKO_URL="http://127.0.0.1:$PORT" \
    k6 run --quiet --summary-export "$RUN/load.json" scripts/k6/light.js >/dev/null 2>&1 || true
  python3 -c 'import json, sys; m = json.load(open(sys.argv[1]))["metrics"]
print("%.2f" % m["http_req_duration"]["p(99)"], int(m["http_reqs"]["count"]), int(m.get("http_req_failed", {}).get("passes", 0)))' \
    "$RUN/load.json"
}

images=$(find "$LIBRARY" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.gif' -o -iname '*.webp' \) | wc -l)
source_bytes=$(find "$LIBRARY" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.png' \) -printf '%s\n' | awk '{ s += $1 } END { print s }')
{
  echo "# keiko library benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Library: $LIBRARY, $images images, $source_bytes bytes of sources. Machine: $(nproc) CPUs,"
  echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)."
  echo "Command: scripts/library-bench.sh --library $LIBRARY --modes $MODES --load $RATE --threads $THREADS"
  echo
  echo "| mode | start | first image ms | ready ms | encoded | CPU ms/image | RSS MB (anon + file) | cache MB | bytes/resp | p99 ms during encode | p99 ms idle |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
} | tee "$RUN/table.md"

for mode in ${MODES//,/ }; do
  cache="$RUN/cache-${mode//:/-}"
  for start in cold warm; do
    start_keiko "$mode" "$cache"
    first=$(wait_200 /)
    p99_busy="-"
    if [ "$RATE" != 0 ] && [ "$start" = cold ]; then
      read -r p99_busy _ failed_busy < <(light_load 15)
      [ "$failed_busy" = 0 ] || p99_busy="$p99_busy ($failed_busy failed)"
    fi
    ready=$(wait_200 /readyz)
    cpu=$(awk -v s="$(cpu_seconds "$PID")" 'BEGIN { printf "%d", s * 1000 + 0.5 }')
    encoded=$(metric keiko_encode_duration_seconds_count)
    sleep 2
    rss="$(rss_mb VmRSS) ($(rss_mb RssAnon) + $(rss_mb RssFile))"
    ready_images=$(metric 'keiko_library_images{state="ready"}')
    body=$(metric keiko_library_body_bytes)
    per_image="-"; [ "${encoded:-0}" -gt 0 ] && per_image=$(( cpu / encoded ))
    p99_idle="-"
    if [ "$RATE" != 0 ] && [ "$start" = cold ]; then
      read -r p99_idle _ _ < <(light_load 15)
    fi
    cache_mb=$(du -sb "$cache" | awk '{ printf "%.1f", $1 / 1048576 }')
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$mode" "$start" "$first" "$ready" \
      "$encoded" "$per_image" "$rss" "$cache_mb" "$(( body / ready_images ))" "$p99_busy" "$p99_idle" | tee -a "$RUN/table.md"
    stop_pid "$PID"
  done
done
[ -z "$OUT" ] || cp "$RUN/table.md" "$OUT"
