#!/usr/bin/env bash
# AVIF's bytes against WebP's at equal visual quality (SSIMULACRA2), and the encode times:
#
#   scripts/avif-bench.sh [--photos DIR] [--count N] [--encoder E] [--speed S] [--asm]
#
#   --photos DIR  JPEG photos to measure (default: a 12-photo library from scripts/make-library.sh
#                 in target/library-avif, made first)
#   --count N     at most N of them (default 6)
#   --encoder E   the AVIF encoder measured: keiko (its own, the default), ravif (rav1e at 4:4:4
#                 through ravif 0.13), or "avifenc ARGS" (Debian's libavif with libaom, for example
#                 "avifenc -c aom -y 420 -d 10")
#   --speed S     the encoder's speed preset, 1-10 (default 6, keiko's)
#   --asm         build rav1e with its assembly (the avif-asm feature; installs nasm)
#
# Runs the ignored harness tests/quality.rs in a release build: each photo encoded as WebP and AVIF
# at a sweep of qualities, decoded by the reference decoders (libwebp, Debian's avifdec, which it
# installs when missing), scored against the source, and the bytes at equal scores compared. Prints
# each photo's sweep and a markdown table (docs/BENCHMARKS.md section 13). Takes minutes: rav1e
# needs seconds per megapixel.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PHOTOS=""; COUNT=6; ENCODER=keiko; SPEED=6; FEATURES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --photos) PHOTOS="$2"; shift ;;
    --count) COUNT="$2"; shift ;;
    --encoder) ENCODER="$2"; shift ;;
    --speed) SPEED="$2"; shift ;;
    --asm) FEATURES=(--features avif-asm) ;;
    -h|--help) usage; exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
  shift
done
[[ "$COUNT" =~ ^[1-9][0-9]*$ ]] || die "--count: a whole number from 1"
[[ "$SPEED" =~ ^([1-9]|10)$ ]] || die "--speed: 1-10"
need_packages libavif-bin:avifdec
[ ${#FEATURES[@]} -eq 0 ] || need_packages nasm:nasm
if [ -z "$PHOTOS" ]; then
  PHOTOS="$ROOT/target/library-avif"
  "$ROOT/scripts/make-library.sh" --count 12 --large 1 --out "$PHOTOS"
fi
[ -d "$PHOTOS" ] || die "--photos: no directory $PHOTOS"
cd "$ROOT"
KEIKO_QUALITY_PHOTOS="$PHOTOS" KEIKO_QUALITY_COUNT="$COUNT" KEIKO_AVIF_ENCODER="$ENCODER" KEIKO_AVIF_SPEED="$SPEED" \
  cargo test --release "${FEATURES[@]}" --test quality -- --ignored --nocapture
