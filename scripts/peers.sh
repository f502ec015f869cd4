#!/usr/bin/env bash
# keiko side by side with Debian's nginx, both serving a random WebP image on GET /:
#
#   scripts/peers.sh [--images DIR] [--duration S] [--rounds N] [--connections C]
#                    [--modes close,keepalive] [--server-cpu N] [--client-cpu N] [--out FILE]
#                    [--cache-dir DIR]
#
# What it measures, and why it is fair:
# - The same bytes. keiko encodes the images once into its cache directory (plain <key>.webp files);
#   nginx then serves exactly those files, picked at random by its built-in random_index module
#   (one link per source image, so both draw from the same set with the same odds).
# - The same pinning. Each server runs alone on 127.0.0.1 with one worker pinned to --server-cpu
#   (taskset); wrk runs pinned to --client-cpu. Rounds interleave (keiko, nginx, keiko, nginx, ...)
#   so slow drifts of the machine spread over both.
# - Comparable work per request. keiko records every hit (batched into SQLite); nginx writes one
#   access-log line per response through a 256 KB buffer flushed every second.
# - Server CPU per request. Before and after each measured run the script reads utime+stime of the
#   server's processes (/proc/<pid>/stat fields 14 and 15; nginx: master and workers) and divides
#   by the requests wrk completed. When wrk's core is the bottleneck both servers show about the
#   same req/s, but their own CPU per request still ranks them.
# Modes: close (wrk sends Connection: close: one TCP connection per request) and keepalive.
# Each measured run follows a 2 s warm-up; every wrk run is bounded (-d plus `timeout`).
#   --cache-dir DIR  keiko's encodings, kept between runs so that only the first run encodes
#                    (default: target/peers-cache/<images dir name>-<hash of its path>)
# Installs nginx and wrk with apt-get when missing; runs KEIKO_BIN=path as it is, else the release
# build (cargo build --release --bins, which does nothing when it is up to date).
# Prints a markdown table, also written to --out FILE when given.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGES=assets/images; DURATION=10; ROUNDS=3; CONNS=64; MODES=close,keepalive
SERVER_CPU=0; CLIENT_CPU=1; OUT=""; CACHE=""
WARMUP=2; WRK_THREADS=2; KEIKO_PORT=18281; NGINX_PORT=18282
CMDLINE="scripts/peers.sh $*"
while [ $# -gt 0 ]; do
  case "$1" in
    --images) IMAGES="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --connections) CONNS="$2"; shift ;;
    --modes) MODES="$2"; shift ;;
    --server-cpu) SERVER_CPU="$2"; shift ;;
    --client-cpu) CLIENT_CPU="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --cache-dir) CACHE="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
  shift
done

for v in DURATION ROUNDS CONNS SERVER_CPU CLIENT_CPU; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a number"
done
if [ "$DURATION" -lt 1 ] || [ "$DURATION" -gt 300 ]; then die "--duration: 1-300 s"; fi
if [ "$ROUNDS" -lt 1 ] || [ "$ROUNDS" -gt 20 ]; then die "--rounds: 1-20"; fi
[ "$CONNS" -ge "$WRK_THREADS" ] || die "--connections: at least $WRK_THREADS"
[ "$SERVER_CPU" != "$CLIENT_CPU" ] || die "--server-cpu and --client-cpu must differ"
IFS=, read -r -a MODE_LIST <<<"$MODES"
for m in "${MODE_LIST[@]}"; do [ "$m" = close ] || [ "$m" = keepalive ] || die "unknown mode '$m'"; done
[ -d "$IMAGES" ] || die "no image directory $IMAGES"
IMAGES="$(cd "$IMAGES" && pwd)"
if [ -z "$CACHE" ]; then
  CACHE="$ROOT/target/peers-cache/$(basename "$IMAGES")-$(printf %s "$IMAGES" | sha256sum | cut -c1-8)"
fi
mkdir -p "$CACHE"; CACHE="$(cd "$CACHE" && pwd)"

# --- tools ----------------------------------------------------------------------------------------
need_packages nginx:/usr/sbin/nginx wrk curl util-linux:taskset
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
"$NGINX" -V 2>&1 | grep -q http_random_index_module || die "$NGINX lacks the random_index module"
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (server and wrk on separate cores)"
taskset -c "$SERVER_CPU,$CLIENT_CPU" true 2>/dev/null || die "CPU $SERVER_CPU or $CLIENT_CPU is not usable here"
KEIKO="$(keiko_bin)"

# Every process started below is tracked by PID (track_pid) and stopped by PID (stop_pid, or on exit).
TMP="$(mktemp -d /tmp/keiko-peers.XXXXXX)"
on_exit rm -rf "$TMP"
chmod 755 "$TMP"   # nginx workers (nobody, when run as root) read the web root through it
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$KEIKO_PORT" "$NGINX_PORT"; do port_free "$p" || die "port $p on 127.0.0.1 is already in use"; done

# --- servers --------------------------------------------------------------------------------------
http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1$2" 2>/dev/null || true; }

cache_progress() { echo "$(find "$CACHE" -name '*.webp' | wc -l) encodings in the cache"; }

# start_keiko <dir> [cpu list]: keiko on KEIKO_PORT with a fresh database; sets SERVER_PID once
# /readyz answers 200 (every image encoded or loaded from the cache; up to 2 h: a large library's
# first encode).
start_keiko() {
  local dir="$1" cpus="${2:-}" pin=()
  mkdir -p "$dir"
  [ -n "$cpus" ] && pin=(taskset -c "$cpus")
  KEIKO_ADDR="127.0.0.1:$KEIKO_PORT" KEIKO_THREADS=1 KEIKO_IMAGES="$IMAGES" KEIKO_DB="$dir/keiko.db" \
    KEIKO_CACHE_DIR="$CACHE" "${pin[@]}" "$KEIKO" 2>"$dir/keiko.log" &
  SERVER_PID=$!; track_pid "$SERVER_PID"
  wait_ready "http://127.0.0.1:$KEIKO_PORT" 7200 "$SERVER_PID" "$dir/keiko.log" cache_progress
}

# prepare_images: one unpinned keiko run (all cores encode) fills the cache; then nginx's web root
# gets one symlink per source image to its encoding, as listed in keiko's manifest.
prepare_images() {
  log "keiko encodes $IMAGES into $CACHE (only new or changed images)"
  start_keiko "$TMP/prepare"
  stop_pid "$SERVER_PID"
  [ -s "$CACHE/manifest.json" ] || die "keiko left no manifest in $CACHE"
  chmod a+rx "$CACHE"; chmod a+r "$CACHE"/*.webp
  WEBROOT="$TMP/webroot"; mkdir -p "$WEBROOT"
  local n=0 key
  while read -r key; do
    [ -s "$CACHE/$key.webp" ] || die "manifest names $key.webp, which is not in $CACHE"
    n=$((n + 1)); ln -s "$CACHE/$key.webp" "$WEBROOT/$(printf %06d "$n").webp"
  done < <(grep -o '"key":"[0-9a-f]*"' "$CACHE/manifest.json" | cut -d'"' -f4)
  [ "$n" -gt 0 ] || die "keiko encoded none of the images in $IMAGES"
  SIZES="$TMP/sizes"; stat -L -c '%s %n' "$WEBROOT"/*.webp >"$SIZES"
  IMAGE_SET="$n images from $IMAGES, WebP (KEIKO_WEBP=${KEIKO_WEBP:-lossless}), mean $(awk '{s+=$1} END {printf "%d", s/NR}' "$SIZES") B \
(min $(sort -n "$SIZES" | head -1 | cut -d' ' -f1), max $(sort -n "$SIZES" | tail -1 | cut -d' ' -f1))"
  log "image set: $IMAGE_SET"
}

write_nginx_conf() {
  local dir="$1" user=""
  # A root master hands the work to workers running as nobody: they must be able to read the files.
  if [ "$(id -u)" = 0 ]; then
    user="user nobody $(id -gn nobody);"
    if ! setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups -- cat "$WEBROOT/000001.webp" >/dev/null 2>&1; then
      log "nobody cannot read $CACHE (a parent directory is closed): nginx workers run as root"
      user="user root;"
    fi
  fi
  cat >"$dir/nginx.conf" <<EOF
$user
worker_processes 1;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; multi_accept on; }
http {
    types { image/webp webp; }
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    server_tokens off;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    open_file_cache max=10000 inactive=60s;
    open_file_cache_valid 60s;
    open_file_cache_min_uses 1;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    # the hit log: one line per response, buffered like keiko's batched hit recording
    log_format hits '\$msec \$status \$uri \$body_bytes_sent';
    access_log $dir/access.log hits buffer=256k flush=1s;
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport backlog=4096 default_server;
        root $WEBROOT;
        location = / { random_index on; }
        location / { }
    }
}
EOF
}

# start_nginx <dir>: master + 1 worker pinned to SERVER_CPU; sets SERVER_PID once GET / is 200.
start_nginx() {
  local dir="$1" i
  mkdir -p "$dir"
  write_nginx_conf "$dir"
  taskset -c "$SERVER_CPU" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" 2>"$dir/nginx.stderr" &
  SERVER_PID=$!; track_pid "$SERVER_PID"
  for i in $(seq 1 100); do
    lib_alive "$SERVER_PID" || { tail -5 "$dir/error.log" "$dir/nginx.stderr" >&2; die "nginx exited while starting"; }
    [ "$(http_code "$NGINX_PORT" /)" = 200 ] && return 0
    sleep 0.1
  done
  die "nginx did not answer 200 within 10 s"
}

# check_server <port> <dir>: three GETs of /, each 200, image/webp, and byte for byte one of the set
check_server() {
  local port="$1" dir="$2" i code ctype size f same
  for i in 1 2 3; do
    read -r code ctype < <(curl -s -m 10 -o "$dir/check.webp" -w '%{http_code} %{content_type}\n' "http://127.0.0.1:$port/" || echo "000 -")
    [ "$code" = 200 ] || die "GET / on port $port answered $code"
    [ "$ctype" = image/webp ] || die "GET / on port $port answered Content-Type '$ctype'"
    size=$(stat -c %s "$dir/check.webp"); same=0
    while read -r _ f; do cmp -s "$f" "$dir/check.webp" && { same=1; break; }; done < <(awk -v s="$size" '$1 == s' "$SIZES")
    [ "$same" = 1 ] || die "GET / on port $port sent $size bytes that match none of the encoded images"
  done
}

# --- measuring ------------------------------------------------------------------------------------
CLK_TCK="$(getconf CLK_TCK)"
# server_cpu: CPU seconds of the server's process (all its threads) and its children (nginx's workers)
server_cpu() {
  local children=()
  read -r -a children < <(cat "/proc/$SERVER_PID"/task/*/children) || true
  cpu_seconds "$SERVER_PID" "${children[@]}"
}

# run_wrk <mode> <port> <seconds> <outfile>: wrk pinned to CLIENT_CPU, bounded by `timeout`
run_wrk() {
  local mode="$1" port="$2" secs="$3" out="$4" hdr=() pid
  [ "$mode" = close ] && hdr=(-H "Connection: close")
  timeout -k 5 $((secs + 30)) taskset -c "$CLIENT_CPU" \
    wrk -t"$WRK_THREADS" -c"$CONNS" -d"${secs}s" --timeout 10s --latency "${hdr[@]}" \
    "http://127.0.0.1:$port/" >"$out" 2>&1 &
  pid=$!; track_pid "$pid"
  wait "$pid" || log "wrk ended with status $? (see $out)"
}

# parse_wrk <file>: "requests req/s p99_ms non2xx socket_errors"
parse_wrk() {
  awk '
    function ms(v) { if (v ~ /us$/) return v * 0.001; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v + 0 }
    / requests in / { req = $1 }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { bad = $NF }
    /Socket errors:/ { gsub(",", ""); sock = $4 + $6 + $8 + $10 }
    END { printf "%d %.0f %.2f %d %d\n", req, rps, p99, bad, sock }' "$1"
}

RESULTS=""   # lines: server mode requests req/s p99_ms non2xx socket_errors server_us_per_req
measure() {
  local name="$1" mode="$2" port="$3" dir="$4" t0 t1 r req rps p99 bad sock
  run_wrk "$mode" "$port" "$WARMUP" "$dir/warmup-$mode.txt"
  sleep 1   # let the server finish the warm-up's hits and closes
  t0=$(server_cpu)
  run_wrk "$mode" "$port" "$DURATION" "$dir/wrk-$mode.txt"
  t1=$(server_cpu)
  read -r req rps p99 bad sock < <(parse_wrk "$dir/wrk-$mode.txt")
  [ "$req" -gt 0 ] || die "$name $mode: wrk completed no request (see $dir/wrk-$mode.txt)"
  r=$(awk -v a="$t0" -v b="$t1" -v n="$req" 'BEGIN {printf "%.1f", (b - a) * 1e6 / n}')
  RESULTS+="$name $mode $req $rps $p99 $bad $sock $r"$'\n'
  log "  $name $mode: $rps req/s, p99 $p99 ms, errors $bad non-2xx + $sock socket, server $r µs/req"
  sleep 1
}

# --- the rounds -----------------------------------------------------------------------------------
prepare_images
for round in $(seq 1 "$ROUNDS"); do
  for name in keiko nginx; do
    dir="$TMP/r$round-$name"
    log "round $round/$ROUNDS: $name on 127.0.0.1, pinned to CPU $SERVER_CPU"
    if [ "$name" = keiko ]; then start_keiko "$dir" "$SERVER_CPU"; port=$KEIKO_PORT
    else start_nginx "$dir"; port=$NGINX_PORT; fi
    check_server "$port" "$dir"
    for mode in "${MODE_LIST[@]}"; do measure "$name" "$mode" "$port" "$dir"; done
    stop_pid "$SERVER_PID"
  done
done

# --- the table ------------------------------------------------------------------------------------
median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
col() { awk -v s="$1" -v m="$2" -v c="$3" '$1 == s && $2 == m {print $c}' <<<"$RESULTS"; }
table() {
  local mode name rps lo hi p99 bad sock us ref ratio
  echo "| server | mode | req/s (median) | min–max | p99 ms | errors (non-2xx + socket) | server µs/req | µs/req × nginx |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  for mode in "${MODE_LIST[@]}"; do
    ref=$(col nginx "$mode" 8 | median)
    for name in keiko nginx; do
      rps=$(col "$name" "$mode" 4 | median)
      lo=$(col "$name" "$mode" 4 | sort -g | head -1); hi=$(col "$name" "$mode" 4 | sort -g | tail -1)
      p99=$(col "$name" "$mode" 5 | median)
      bad=$(col "$name" "$mode" 6 | awk '{s += $1} END {print s}')
      sock=$(col "$name" "$mode" 7 | awk '{s += $1} END {print s}')
      us=$(col "$name" "$mode" 8 | median)
      ratio=$(awk -v a="$us" -v b="$ref" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}')
      printf '| %s | %s | %.0f | %s–%s | %.2f | %s + %s | %.1f | %s |\n' \
        "$name" "$mode" "$rps" "$lo" "$hi" "$p99" "$bad" "$sock" "$us" "$ratio"
    done
  done
}
keiko_version() {
  if [ -n "${KEIKO_BIN:-}" ]; then echo "$KEIKO (KEIKO_BIN)"; return; fi
  printf '%s' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || printf ' with uncommitted changes'
  echo
}
report() {
  echo "## keiko and nginx, same images, one pinned core each"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); kernel $(uname -r); CPU $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores"
  echo "- Command: \`$CMDLINE\`"
  echo "- keiko $(keiko_version), KEIKO_THREADS=1; $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), worker_processes 1, random_index over links to keiko's cache files, sendfile, open_file_cache, access_log buffer=256k flush=1s (one line per response, like keiko's hit recording)"
  echo "- Image set: $IMAGE_SET"
  echo "- Servers pinned to CPU $SERVER_CPU; $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}') pinned to CPU $CLIENT_CPU, -t$WRK_THREADS -c$CONNS, ${DURATION} s per run after a ${WARMUP} s warm-up, $ROUNDS interleaved round(s)$([[ ",$MODES," == *,close,* ]] && echo '; close mode sends Connection: close')"
  echo "- server µs/req: user+system CPU of the server's processes during the run ÷ requests (median over rounds; tick-sampled at ${CLK_TCK} Hz). µs/req × nginx: keiko's ÷ nginx's, same mode (below 1: keiko spends less CPU per request)"
  echo
  table
}
report | tee "$TMP/table.md"
[ -z "$OUT" ] || cp "$TMP/table.md" "$OUT"
