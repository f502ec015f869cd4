#!/usr/bin/env bash
# Builds a large, reproducible photo library from the six small bundled images in assets/images,
# for benchmarking keiko's start-up time and memory as the library grows:
#
#   scripts/make-library.sh [--count N] [--large M] [--out DIR] [--jobs J]
#
#   --count N   photos of exactly 1920x1280, photo-00001.jpg ... (default 1000, at most 99999)
#   --large M   12-megapixel photos of 4032x3024, large-1.jpg ... (default 4, at most 1000)
#   --out DIR   where to write them (default target/library, relative to the project root)
#   --jobs J    ImageMagick processes run at once (default: one per core)
#
# Every file is a JPEG (quality 85) made from one bundled image (round robin) by a recipe that
# depends only on its index: a crop of a different size and place, a flip and/or flop from the
# index's bits, a colour modulation and tint, a cover-resize to the target size with a centre crop,
# and Gaussian noise with a fixed seed. So no two files encode alike (keiko or a cache cannot
# share work between them), and the fine noise gives a WebP encoder the texture of a real photo
# rather than the smooth blur of an upscaled thumbnail. Metadata is stripped (-strip) and
# ImageMagick runs single-threaded per process, so the same tool versions give the same bytes.
#
# DIR gets SHA256SUMS and PARAMS (the parameters, ImageMagick version and source checksums). When
# both match and every file checks out, the script does nothing; otherwise it deletes its own
# photo-*.jpg / large-*.jpg files in DIR and builds them again. Installs Debian's ImageMagick when
# it is missing (apt-get, with sudo when not root).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RECIPE=1                        # bump when the recipe below changes, so old libraries are rebuilt
COUNT=1000; LARGE=4; OUT=target/library; JOBS=$(nproc)
PHOTO_SIZE=1920x1280; LARGE_SIZE=4032x3024; QUALITY=85; SOURCES=assets/images

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --count|--large|--out|--jobs) [ $# -ge 2 ] || usage_error "$1 needs a value" ;;&
      --count) COUNT="$2"; shift ;;
      --large) LARGE="$2"; shift ;;
      --out) OUT="$2"; shift ;;
      --jobs) JOBS="$2"; shift ;;
      *) usage_error "unknown argument $1" ;;
    esac
    shift
  done
  in_range "$COUNT" 0 99999 || usage_error "--count: a whole number from 0 to 99999, not '$COUNT'"
  in_range "$LARGE" 0 1000 || usage_error "--large: a whole number from 0 to 1000, not '$LARGE'"
  in_range "$JOBS" 1 256 || usage_error "--jobs: a whole number from 1 to 256, not '$JOBS'"
  COUNT=$((10#$COUNT)); LARGE=$((10#$LARGE)); JOBS=$((10#$JOBS))
  [ $((COUNT + LARGE)) -gt 0 ] || usage_error "--count and --large are both 0: nothing to make"
  [ -n "$OUT" ] || usage_error "--out: empty directory name"
  [ ! -e "$OUT" ] || [ -d "$OUT" ] || usage_error "--out: $OUT exists and is not a directory"
}

in_range() { [[ "$1" =~ ^[0-9]{1,6}$ ]] && [ "$((10#$1))" -ge "$2" ] && [ "$((10#$1))" -le "$3" ]; }

# --- ImageMagick ---------------------------------------------------------------------------------
# The machine may have a stand-in "convert" on PATH that only shows pictures, so a candidate counts
# only when its -version really starts with "Version: ImageMagick".
is_imagemagick() { [ -x "$1" ] && "$1" -version 2>/dev/null | head -n 1 | grep -q '^Version: ImageMagick'; }

find_imagemagick() {
  local c
  for c in /usr/bin/convert /usr/bin/magick "$(command -v magick || true)" "$(command -v convert || true)"; do
    if [ -n "$c" ] && is_imagemagick "$c"; then IM="$c"; return 0; fi
  done
  return 1
}

# One process per job and no OpenMP threads: faster on a busy machine and independent of thread
# scheduling. Debian's policy.xml caps memory at 256MiB per process; a 12 MP image spills into its
# 512MiB "map" allowance, which is enough (the caps are maximums that MAGICK_* cannot raise).
setup_imagemagick() {
  find_imagemagick || { install_packages imagemagick; find_imagemagick; } || die "no working ImageMagick after installing it"
  IM_VERSION=$("$IM" -version | head -n 1 | sed 's/^Version: //; s/ https\?:.*//')
  export IM MAGICK_THREAD_LIMIT=1
}

# --- the recipe ----------------------------------------------------------------------------------
# "name width height" of each bundled image, one per line, in a fixed order.
source_table() {
  local f
  for f in "$SOURCES"/*.{gif,jpg,jpeg,png}; do
    [ -f "$f" ] && printf '%s %s\n' "$f" "$("$IM" "${f}[0]" -format '%w %h' info:)"
  done | LC_ALL=C sort
}

# R = a well-mixed 32-bit number from the index and a salt (a small integer hash, no state).
rnd() {
  local x=$(( ($1 * 2654435761 + $2 * 40503 + 0x9e3779b9) & 0xffffffff ))
  x=$(( (((x >> 16) ^ x) * 0x45d9f3b) & 0xffffffff ))
  x=$(( (((x >> 16) ^ x) * 0x45d9f3b) & 0xffffffff ))
  R=$(( (x >> 16) ^ x ))
}

# ARGS = the convert options that turn source image (sw x sh) into picture number n of size WxH.
recipe() {
  local n=$1 sw=$2 sh=$3 size=$4 cw ch cx cy q
  rnd "$n" 1; cw=$(( sw * (55 + R % 41) / 100 ))     # crop 55-95% of each side ...
  rnd "$n" 2; ch=$(( sh * (55 + R % 41) / 100 ))
  rnd "$n" 3; cx=$(( R % (sw - cw + 1) ))            # ... anywhere inside the image
  rnd "$n" 4; cy=$(( R % (sh - ch + 1) ))
  ARGS=(-background white -alpha remove -alpha off -crop "${cw}x${ch}+${cx}+${cy}" +repage)
  q=$(( (n - 1) / SOURCE_COUNT ))                     # the how-many-th use of this source
  (( q & 1 )) && ARGS+=(-flop)
  (( q & 2 )) && ARGS+=(-flip)
  local b s h r g bl p
  rnd "$n" 5; b=$(( 90 + R % 21 )); rnd "$n" 6; s=$(( 70 + R % 61 )); rnd "$n" 7; h=$(( 80 + R % 41 ))
  rnd "$n" 8; r=$(( R & 255 )); g=$(( (R >> 8) & 255 )); bl=$(( (R >> 16) & 255 )); p=$(( 4 + (R >> 24) % 9 ))
  ARGS+=(-modulate "$b,$s,$h" -fill "rgb($r,$g,$bl)" -colorize "$p%")
  ARGS+=(-resize "${size}^" -gravity center -extent "$size")
  ARGS+=(-seed "$n" -attenuate 0.3 +noise Gaussian -strip -quality "$QUALITY" -sampling-factor 2x2 -interlace none)
}

# Makes one file from a job "p17" (photo-00017.jpg) or "l2" (large-2.jpg). Runs under xargs.
make_one() {
  local job=$1 n name size seed src sw sh
  n=${job#?}
  case "$job" in
    p*) name=$(printf 'photo-%05d.jpg' "$n"); size=$PHOTO_SIZE; seed=$n ;;
    l*) name="large-$n.jpg"; size=$LARGE_SIZE; seed=$(( 1000000 + n )) ;;
  esac
  read -r src sw sh < <(sed -n "$(( (n - 1) % SOURCE_COUNT + 1 ))p" <<<"$SOURCE_TABLE")
  recipe "$seed" "$sw" "$sh" "$size"
  "$IM" "${src}[0]" "${ARGS[@]}" "jpeg:$OUT/$name.part" || { log "ERROR: failed to make $name"; return 255; }
  mv -f "$OUT/$name.part" "$OUT/$name"
  case "$job" in
    p*) (( n % 100 == 0 )) && log "photo $n of $COUNT done ($(( $(date +%s) - START ))s)" ;;
    l*) log "large $n of $LARGE done ($(( $(date +%s) - START ))s)" ;;
  esac
  return 0
}

# --- the library ---------------------------------------------------------------------------------
file_names() {
  local i
  for ((i = 1; i <= COUNT; i++)); do printf 'photo-%05d.jpg\n' "$i"; done
  for ((i = 1; i <= LARGE; i++)); do printf 'large-%d.jpg\n' "$i"; done
}

params() {
  printf 'recipe=%s\ncount=%s\nlarge=%s\nphoto_size=%s\nlarge_size=%s\nquality=%s\nimagemagick=%s\n' \
    "$RECIPE" "$COUNT" "$LARGE" "$PHOTO_SIZE" "$LARGE_SIZE" "$QUALITY" "$IM_VERSION"
  cut -d' ' -f1 <<<"$SOURCE_TABLE" | xargs sha256sum | sed 's/^/source=/'
}

our_files() { find "$OUT" -maxdepth 1 -type f \( -name 'photo-*.jpg' -o -name 'large-*.jpg' -o -name '*.jpg.part' \) -printf '%f\n' | LC_ALL=C sort; }

up_to_date() {
  [ -f "$OUT/PARAMS" ] && [ -f "$OUT/SHA256SUMS" ] || return 1
  [ "$(cat "$OUT/PARAMS")" = "$(params)" ] || return 1
  [ "$(sed 's/^[0-9a-f]*  //' "$OUT/SHA256SUMS" | LC_ALL=C sort)" = "$(file_names | LC_ALL=C sort)" ] || return 1
  [ "$(our_files)" = "$(file_names | LC_ALL=C sort)" ] || return 1
  (cd "$OUT" && sha256sum --check --quiet --strict SHA256SUMS >/dev/null 2>&1)
}

clean_out() {
  mkdir -p "$OUT"
  rm -f "$OUT/PARAMS" "$OUT/SHA256SUMS"
  our_files | (cd "$OUT" && xargs -r rm -f --)
}

# Large files first: they take longest, so starting them early keeps every job busy to the end.
build() {
  local status=0
  # shellcheck disable=SC2016 # the inner bash expands $job
  { for ((i = 1; i <= LARGE; i++)); do echo "l$i"; done
    for ((i = 1; i <= COUNT; i++)); do echo "p$i"; done
  } | xargs -P "$JOBS" -n 10 bash -c 'for job; do make_one "$job" || exit 255; done' _ || status=$?
  [ "$status" -eq 0 ] || die "ImageMagick failed (xargs status $status); the library in $OUT is incomplete"
}

check_and_sum() {
  local first want got
  for first in photo-00001.jpg large-1.jpg; do
    [ -f "$OUT/$first" ] || continue
    case "$first" in photo-*) want=$PHOTO_SIZE ;; *) want=$LARGE_SIZE ;; esac
    got=$("$IM" "$OUT/$first" -format '%wx%h' info:)
    [ "$got" = "$want" ] || die "$first is $got, not $want"
  done
  [ "$(our_files)" = "$(file_names | LC_ALL=C sort)" ] || die "$OUT does not hold exactly the expected files"
  (cd "$OUT" && file_names | xargs sha256sum -- >SHA256SUMS.part && mv -f SHA256SUMS.part SHA256SUMS)
  [ "$(cut -d' ' -f1 "$OUT/SHA256SUMS" | sort -u | wc -l)" -eq $((COUNT + LARGE)) ] || die "two files came out identical"
  params >"$OUT/PARAMS"                                   # written last: marks the library complete
}

summary() {
  local bytes
  bytes=$(cd "$OUT" && file_names | xargs stat -c %s -- | awk '{ s += $1 } END { print s }')
  log "$1: $((COUNT + LARGE)) files, $bytes bytes ($(numfmt --to=iec "$bytes")) in $OUT, $2"
}

main() {
  parse_args "$@"
  setup_imagemagick
  SOURCE_TABLE=$(source_table)
  SOURCE_COUNT=$(grep -c . <<<"$SOURCE_TABLE" || true)
  [ "$SOURCE_COUNT" -gt 0 ] || die "no images in $SOURCES"
  START=$(date +%s)
  if up_to_date; then summary "up to date, nothing to do" "checked in $(( $(date +%s) - START ))s"; exit 0; fi
  log "building $COUNT photos of $PHOTO_SIZE and $LARGE of $LARGE_SIZE into $OUT with $JOBS jobs ($IM_VERSION)"
  export OUT COUNT LARGE PHOTO_SIZE LARGE_SIZE QUALITY SOURCE_TABLE SOURCE_COUNT START SCRIPT_NAME
  export -f make_one recipe rnd log
  clean_out
  build
  check_and_sum
  summary "done" "$(( $(date +%s) - START ))s"
}

main "$@"
