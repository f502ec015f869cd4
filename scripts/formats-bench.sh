#!/usr/bin/env bash
# What each input format costs the background encoder, against JPEG at the same pixels:
#
#   scripts/formats-bench.sh [--rounds N] [--source FILE.jpg] [--out FILE]
#
# One photo (by default assets/images/coffee.jpg scaled to 2400 px wide, 3.8 megapixels, or --source
# as it is) is written in every format keiko
# reads, with Debian's tools: JPEG (cjpeg -quality 90), the same JPEG with an Adobe RGB profile
# (Little CMS's jpgicc), PNG, TIFF (8-bit LZW and 16-bit), BMP, JPEG XL (cjxl -d 1), HEIC and AVIF
# (heif-enc -q 80). For each format and round, a fresh keiko (release build with --features heif,
# one encoder thread, --webp lossy:75 so that the WebP half of the work is the same for all, a fresh
# cache) pinned to CPU 0 encodes it; the figure is keiko_encode_duration_seconds (decode, profile
# and orientation, WebP encode) from /metrics. Rounds interleave the formats; medians are printed
# as a markdown table, with each format's ratio to JPEG.
#
# Installs netpbm, libjpeg-turbo-progs, libjxl-tools, libheif-examples, liblcms2-utils,
# libgs-common and libheif-dev when missing. Every process it starts is ended by PID.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=5; SOURCE=""; OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift ;;
    --source) SOURCE="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
  shift
done
[[ "$ROUNDS" =~ ^[1-9]$ ]] || die "--rounds: 1-9"
SCALE=""
if [ -z "$SOURCE" ]; then SOURCE="$ROOT/assets/images/coffee.jpg"; SCALE=2400; fi
[ -f "$SOURCE" ] || die "no source photo at $SOURCE"

need_packages netpbm:pnmtotiff libjpeg-turbo-progs:cjpeg libjxl-tools:cjxl libheif-examples:heif-enc \
  liblcms2-utils:jpgicc libgs-common:/usr/share/color/icc/ghostscript/a98.icc \
  libheif-dev:/usr/include/*/libheif/heif.h pkg-config:pkg-config curl:curl
if [ -n "${KEIKO_BIN:-}" ]; then
  KEIKO=$(keiko_bin)
else
  log "cargo build --release --features heif"
  cargo build --release --features heif --quiet >&2 || die "cargo build failed"
  KEIKO=./target/release/keiko
fi
TMP="$(mktemp -d /tmp/keiko-formats-bench.XXXXXX)"
on_exit rm -rf "$TMP"

log "writing $(basename "$SOURCE") in every format"
if [ -n "$SCALE" ]; then
  jpegtopnm "$SOURCE" 2>/dev/null | pamscale -width "$SCALE" >"$TMP/photo.ppm"
else
  jpegtopnm "$SOURCE" >"$TMP/photo.ppm" 2>/dev/null
fi
pnmtopng "$TMP/photo.ppm" >"$TMP/photo.png"
declare -A FILE=(
  [jpeg]=photo.jpg [jpeg-adobe-rgb]=adobe.jpg [png]=photo.png [tiff-8]=photo8.tif
  [tiff-16]=photo16.tif [bmp]=photo.bmp [jxl]=photo.jxl [heic]=photo.heic [avif]=photo.avif
)
FORMATS=(jpeg jpeg-adobe-rgb png tiff-8 tiff-16 bmp jxl heic avif)
cjpeg -quality 90 "$TMP/photo.ppm" >"$TMP/photo.jpg"
jpgicc -q90 -o /usr/share/color/icc/ghostscript/a98.icc -e "$TMP/photo.jpg" "$TMP/adobe.jpg" >/dev/null
pnmtotiff -lzw "$TMP/photo.ppm" >"$TMP/photo8.tif" 2>/dev/null
pamdepth 65535 "$TMP/photo.ppm" | pnmtotiff >"$TMP/photo16.tif" 2>/dev/null
ppmtobmp "$TMP/photo.ppm" >"$TMP/photo.bmp" 2>/dev/null
cjxl -d 1 "$TMP/photo.png" "$TMP/photo.jxl" >/dev/null 2>&1
heif-enc -q 80 -o "$TMP/photo.heic" "$TMP/photo.png" >/dev/null
heif-enc -A -q 80 -o "$TMP/photo.avif" "$TMP/photo.png" >/dev/null
read -r _ WIDTH HEIGHT < <(head -c 64 "$TMP/photo.ppm" | tr -s ' \n' ' ' | cut -d' ' -f1-3)

metric() { curl -s "http://$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }

echo "format round bytes ms" >"$TMP/runs"
run() {  # run FORMAT ROUND
  local format=$1 round=$2 dir="$TMP/run-$1-$2" pid addr sum count
  mkdir -p "$dir/images"
  cp "$TMP/${FILE[$format]}" "$dir/images/"
  KEIKO_ADDR=127.0.0.1:0 KEIKO_THREADS=1 KEIKO_ENCODERS=1 KEIKO_WEBP=lossy:75 KEIKO_IMAGES="$dir/images" \
    KEIKO_DB="$dir/k.db" KEIKO_CACHE_DIR="$dir/cache" KEIKO_LOG=warn,keiko=info \
    taskset -c 0 "$KEIKO" >"$dir/keiko.log" 2>&1 &
  pid=$!
  track_pid "$pid"
  addr=$(keiko_addr "$dir/keiko.log" 30 "$pid")
  wait_ready "http://$addr" 300 "$pid" "$dir/keiko.log"
  sum=$(metric "$addr" keiko_encode_duration_seconds_sum)
  count=$(metric "$addr" keiko_encode_duration_seconds_count)
  [ "${count%.*}" = 1 ] || die "$format: not encoded: $(cat "$dir/keiko.log")"
  stop_pid "$pid"
  awk -v f="$format" -v r="$round" -v b="$(stat -c %s "$TMP/${FILE[$format]}")" -v s="$sum" -v c="$count" \
    'BEGIN { printf "%s %s %d %.2f\n", f, r, b, s / c * 1000 }' >>"$TMP/runs"
  log "$(tail -n 1 "$TMP/runs")"
}

for round in $(seq "$ROUNDS"); do
  for format in "${FORMATS[@]}"; do run "$format" "$round"; done
done

python3 - "$TMP/runs" "$WIDTH" "$HEIGHT" "$ROUNDS" "${FORMATS[@]}" >"$TMP/table" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
width, height, rounds, formats = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
med = {f: statistics.median(float(r[3]) for r in rows if r[0] == f) for f in formats}
size = {f: next(int(r[2]) for r in rows if r[0] == f) for f in formats}
print(f"One {width}x{height} photo in each format, encoded by one encoder thread pinned to CPU 0, "
      f"--webp lossy:75, medians of {rounds} interleaved round(s)\n")
print("| input | file bytes | encode ms per image | vs JPEG |")
print("|---|---:|---:|---:|")
for f in formats:
    print(f"| {f} | {size[f]:,} | {med[f]:.1f} | {med[f] / med['jpeg']:.2f}x |")
print("\nruns: " + "; ".join(" ".join(r) for r in rows))
PY
cat "$TMP/table"
[ -z "$OUT" ] || cp "$TMP/table" "$OUT"
