#!/usr/bin/env bash
# The image API's costs, measured on this machine:
#
#   scripts/render-bench.sh [--images DIR] [--sizes 300x200,800x600] [--webp lossy:75]
#                           [--duration S] [--out FILE]
#
# 1. Render throughput, cold: distinct renditions per second on one core. keiko runs pinned to
#    CPU 1 with one event loop and one render thread, its encodings already in its cache (made
#    before the clock starts) and its rendition disk cache off; curl asks for /images/<name>/WxH
#    of every image, two at a time, from CPU 0. Side by side: libvips' vipsthumbnail (Debian's
#    libvips-tools) pinned to CPU 1 with VIPS_CONCURRENCY=1, making the same sizes (--smartcrop
#    centre: scaled and centre-cropped to exactly WxH, WebP at the same quality) from the same
#    source files, and again from keiko's own WebP encodings (what keiko renders from). Figures:
#    renditions/s (wall clock) and CPU ms per rendition (utime+stime of the process).
# 2. Cached renditions against whole images: keiko pinned to CPU 0, wrk pinned to CPU 1, each path
#    for --duration s after a 1 s warm-up, keep-alive and Connection: close; server µs/req is the
#    keiko process's CPU time over the requests wrk completed. Paths: /images/<name>, the rendition
#    /images/<name>/<its own width>/<its own height> (nearly the same bytes) and /images/<name>/300/200.
# 3. Bytes per response of each size against the whole image, averaged over the images.
# 4. How a render's cost grows with its output: CPU ms per rendition (keiko pinned to CPU 1, one
#    render thread, 5 distinct images per size, one at a time) for squares from 100 to 5000 px,
#    with blur and grayscale at 1000 px, and ASCII art 80 and 400 characters wide.
#
# Installs libvips-tools, wrk and curl with apt-get when missing; runs KEIKO_BIN=path as it is,
# else the release build (cargo build --release --bins, which does nothing when it is up to date).
# Every process it starts is ended by PID; every load run is bounded in time.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGES=target/library-100; SIZES=300x200,800x600; WEBP=lossy:75; DURATION=5; OUT=""; PORT=18291
while [ $# -gt 0 ]; do
  case "$1" in
    --images) IMAGES="$2"; shift ;;
    --sizes) SIZES="$2"; shift ;;
    --webp) WEBP="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
  shift
done

if ! [[ "$DURATION" =~ ^[0-9]+$ ]] || [ "$DURATION" -lt 1 ] || [ "$DURATION" -gt 120 ]; then die "--duration: 1-120 s"; fi
[[ "$WEBP" =~ ^lossy:([0-9]+)$ ]] || die "--webp must be lossy:Q (vipsthumbnail writes lossy WebP)"
QUALITY="${BASH_REMATCH[1]}"
IFS=, read -r -a SIZE_LIST <<<"$SIZES"
for s in "${SIZE_LIST[@]}"; do [[ "$s" =~ ^[0-9]+x[0-9]+$ ]] || die "bad size '$s' (WxH)"; done
[ -d "$IMAGES" ] || die "no image directory $IMAGES (scripts/make-library.sh builds target/library-100)"
IMAGES="$(cd "$IMAGES" && pwd)"
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs"

need_packages libvips-tools:vipsthumbnail wrk curl
KEIKO=$(keiko_bin)

TMP="$(mktemp -d /tmp/keiko-render-bench.XXXXXX)"
on_exit rm -rf "$TMP"
CACHE="$ROOT/target/render-bench-cache/$(basename "$IMAGES")-$WEBP"
mkdir -p "$CACHE"

cache_progress() { echo "$(find "$CACHE" -mindepth 1 -maxdepth 1 | wc -l) files in the cache"; }

# start_keiko <cpu>: one loop, one renderer, renditions in memory only; sets PID once /readyz
# answers 200 (up to an hour: the library's first encode).
start_keiko() {
  KEIKO_ADDR="127.0.0.1:$PORT" KEIKO_THREADS=1 KEIKO_RENDERERS=1 KEIKO_ENCODERS=2 KEIKO_WEBP="$WEBP" \
    KEIKO_IMAGES="$IMAGES" KEIKO_DB="$TMP/keiko.db" KEIKO_CACHE_DIR="$CACHE" KEIKO_VARIANT_DISK_MB=0 \
    KEIKO_RENDER_QUEUE=1000 taskset -c "$1" "$KEIKO" 2>>"$TMP/keiko.log" &
  PID=$!; track_pid "$PID"
  wait_ready "http://127.0.0.1:$PORT" 3600 "$PID" "$TMP/keiko.log" cache_progress
}

log "encoding $IMAGES with $WEBP once (kept in $CACHE)"
start_keiko 0,1
# Every image's name, page by page from /v2/list (names are used in URLs as they are: the
# libraries scripts/make-library.sh builds have plain names).
mapfile -t NAMES < <(python3 scripts/list-images.py "http://127.0.0.1:$PORT")
N=${#NAMES[@]}
[ "$N" -gt 0 ] || die "keiko lists no image"
FULL_BYTES=$(for n in "${NAMES[@]}"; do curl -s -o /dev/null -w '%{size_download}\n' "http://127.0.0.1:$PORT/images/$n"; done \
  | awk '{s += $1} END {printf "%d", s / NR}')
stop_pid "$PID"
SOURCES=(); for n in "${NAMES[@]}"; do SOURCES+=("$IMAGES/$n"); done
mapfile -t ENCODED < <(python3 scripts/cache-encodings.py "$CACHE/manifest.json")

report=()
row() { report+=("$*"); printf '%s\n' "$*" >&2; }
row "| renderer | input | size | renditions | wall s | renditions/s | CPU ms/rendition |"
row "|---|---|---|---:|---:|---:|---:|"
for size in "${SIZE_LIST[@]}"; do
  w=${size%x*}; h=${size#*x}
  start_keiko 1
  before=$(cpu_seconds "$PID"); t0=$(date +%s.%N)
  printf '%s\n' "${NAMES[@]}" | taskset -c 0 xargs -P 2 -I{} timeout 120 curl -s -o /dev/null -w '%{http_code}\n' \
    "http://127.0.0.1:$PORT/images/{}/$w/$h" > "$TMP/codes"
  t1=$(date +%s.%N); after=$(cpu_seconds "$PID")
  ok=$(grep -c '^200$' "$TMP/codes" || true)
  [ "$ok" = "$N" ] || die "keiko answered $ok of $N renditions with 200"
  VARIANT_BYTES=$(for n in "${NAMES[@]:0:20}"; do curl -s -o /dev/null -w '%{size_download}\n' "http://127.0.0.1:$PORT/images/$n/$w/$h"; done \
    | awk '{s += $1} END {printf "%d", s / NR}')
  stop_pid "$PID"
  row "$(awk -v n="$N" -v a="$t0" -v b="$t1" -v c0="$before" -v c1="$after" -v s="$size" \
    'BEGIN {printf "| keiko (1 render thread) | its WebP encodings | %s | %d | %.2f | %.1f | %.1f |", s, n, b-a, n/(b-a), (c1-c0)*1000/n}')"
  for input in sources encodings; do
    if [ "$input" = sources ]; then files=("${SOURCES[@]}"); label="the source files"; else files=("${ENCODED[@]}"); label="keiko's WebP encodings"; fi
    rm -rf "$TMP/vips"; mkdir -p "$TMP/vips"
    /usr/bin/time -f '%e %U %S' -o "$TMP/time" env VIPS_CONCURRENCY=1 taskset -c 1 timeout 600 vipsthumbnail "${files[@]}" \
      -s "${w}x${h}" --smartcrop centre -o "$TMP/vips/%s.webp[Q=$QUALITY]"
    made=$(find "$TMP/vips" -mindepth 1 -maxdepth 1 | wc -l)
    row "$(awk -v n="$made" -v s="$size" -v l="$label" '{printf "| vipsthumbnail (VIPS_CONCURRENCY=1) | %s | %s | %d | %.2f | %.1f | %.1f |", l, s, n, $1, n/$1, ($2+$3)*1000/n}' "$TMP/time")"
  done
  row "| bytes per response | | $size | | | $VARIANT_BYTES | (whole image: $FULL_BYTES, $(awk -v a="$VARIANT_BYTES" -v b="$FULL_BYTES" 'BEGIN {printf "%.1f%%", 100*a/b}')) |"
done

# --- 2. cached renditions against whole images ------------------------------------------------------
start_keiko 0
name="${NAMES[0]}"
read -r W H < <(curl -s "http://127.0.0.1:$PORT/images/$name/info" | python3 -c 'import json,sys; i=json.load(sys.stdin); print(i["width"], i["height"])')
paths=("/images/$name" "/images/$name/$W/$H" "/images/$name/300/200")
for p in "${paths[@]}"; do curl -s -o /dev/null "http://127.0.0.1:$PORT$p"; done
row ""
row "| path | mode | bytes | req/s | server µs/req |"
row "|---|---|---:|---:|---:|"
for mode in keepalive close; do
  header=(); [ "$mode" = close ] && header=(-H "Connection: close")
  for p in "${paths[@]}"; do
    taskset -c 1 timeout 30 wrk -t2 -c64 -d1s "${header[@]}" "http://127.0.0.1:$PORT$p" >/dev/null
    before=$(cpu_seconds "$PID")
    out=$(taskset -c 1 timeout $((DURATION + 20)) wrk -t2 -c64 -d"${DURATION}s" "${header[@]}" "http://127.0.0.1:$PORT$p")
    after=$(cpu_seconds "$PID")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    bytes=$(curl -s -o /dev/null -w '%{size_download}' "http://127.0.0.1:$PORT$p")
    row "$(awk -v r="$reqs" -v d="$DURATION" -v c0="$before" -v c1="$after" -v p="$p" -v m="$mode" -v b="$bytes" \
      'BEGIN {printf "| %s | %s | %d | %.0f | %.2f |", p, m, b, r/d, (c1-c0)*1e6/r}')"
  done
done
stop_pid "$PID"

# --- 4. cost by output size ---------------------------------------------------------------------------
start_keiko 1
row ""
row "| rendition | CPU ms/rendition | bytes |"
row "|---|---:|---:|"
for spec in 100/100 500/500 1000/1000 2000/2000 5000/5000 "1000/1000?blur=5" "1000/1000?grayscale" "ascii?width=80" "ascii?width=400"; do
  [ "$N" -ge 5 ] || die "part 4 needs 5 images"
  before=$(cpu_seconds "$PID")
  for n in "${NAMES[@]:0:5}"; do
    code=$(timeout 120 curl -s -o "$TMP/out" -w '%{http_code}' "http://127.0.0.1:$PORT/images/$n/$spec")
    [ "$code" = 200 ] || die "/images/$n/$spec answered $code"
  done
  after=$(cpu_seconds "$PID")
  row "$(awk -v c0="$before" -v c1="$after" -v s="/images/<name>/$spec" -v b="$(stat -c %s "$TMP/out")" \
    'BEGIN {printf "| `%s` | %.1f | %d |", s, (c1-c0)*1000/5, b}')"
done
stop_pid "$PID"
if [ -n "$OUT" ]; then printf '%s\n' "${report[@]}" > "$OUT"; log "table written to $OUT"; fi
