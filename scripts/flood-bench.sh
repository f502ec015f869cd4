#!/usr/bin/env bash
# The catalogue route under an abusive render flood, side by side with a quiet run:
#
#   scripts/flood-bench.sh [--rounds N] [--duration S] [--rate R] [--renders-cpu C] [--spin] [--out FILE]
#
# keiko (release build, one event loop, the bundled images in assets/images) runs pinned to CPU 0,
# all of its threads: the event loop, and the render threads at idle priority beside it; with
# --renders-cpu 1 the render threads are moved to CPU 1 once started (where wrk runs), so that the
# event loop's core is its own. wrk (-t1 -c32)
# asks for GET / from CPU 1 for --duration s, once alone (quiet) and once while scripts/flood.py,
# also on CPU 1, asks --rate times a second for renditions no one asked for before (distinct sizes
# up to 5000x5000 with blur 10) and hangs up at once (every tenth request waits for its answer).
# With --spin the flood is replaced by a busy loop with no memory traffic in the idle scheduling
# class on CPU 0: the floor that any work sharing the event loop's core costs, however low its
# priority. Rounds alternate quiet and flood, each run with a keiko of its own. Figures per run: GET / requests/s and p99 (wrk), the event
# loop thread's own CPU per request (its utime+stime from /proc/PID/task/TID/stat over the
# requests wrk completed), the renders started, finished and cancelled (from /metrics), and the
# server's peak RSS over the run (VmRSS sampled every 200 ms). Prints a markdown table of the
# medians and each run's line; --out FILE also writes it there.
#
# Installs wrk and curl with apt-get when missing; runs KEIKO_BIN=path as it is, else the release
# build. Every process it starts is ended by PID; every load run is bounded in time.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=3; DURATION=10; RATE=100; RENDERS_CPU=""; SPIN=""; OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --rate) RATE="$2"; shift ;;
    --renders-cpu) RENDERS_CPU="$2"; shift ;;
    --spin) SPIN=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
  shift
done
[[ "$ROUNDS" =~ ^[1-9][0-9]?$ ]] || die "--rounds: 1-99"
if ! [[ "$DURATION" =~ ^[0-9]+$ ]] || [ "$DURATION" -lt 2 ] || [ "$DURATION" -gt 120 ]; then die "--duration: 2-120 s"; fi
if ! [[ "$RATE" =~ ^[0-9]+$ ]] || [ "$RATE" -lt 1 ] || [ "$RATE" -gt 2000 ]; then die "--rate: 1-2000 a second"; fi
if [ -n "$RENDERS_CPU" ] && ! [[ "$RENDERS_CPU" =~ ^[01]$ ]]; then die "--renders-cpu: 0 or 1"; fi
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs"

need_packages wrk curl
KEIKO=$(keiko_bin)
TMP="$(mktemp -d /tmp/keiko-flood-bench.XXXXXX)"
on_exit rm -rf "$TMP"

# start_keiko: a fresh keiko pinned to CPU 0 (its cache kept between runs, so it is ready at
# once); sets PID, ADDR and LOOP_TID. Every run starts its own, so that renders left over from a
# flood can never slow the quiet run after it.
start_keiko() {
  KEIKO_ADDR=127.0.0.1:0 KEIKO_THREADS=1 KEIKO_IMAGES="$ROOT/assets/images" KEIKO_DB="$TMP/k.db" \
    KEIKO_CACHE_DIR="$TMP/cache" KEIKO_VARIANT_DISK_MB=0 KEIKO_LOG=warn,keiko=info \
    KEIKO_CLIENT_RENDERS_PER_SECOND=0 taskset -c 0 "$KEIKO" >"$TMP/keiko.log" 2>&1 &
  PID=$!
  track_pid "$PID"
  ADDR=$(keiko_addr "$TMP/keiko.log" 30 "$PID")
  wait_ready "http://$ADDR" 120 "$PID" "$TMP/keiko.log"
  LOOP_TID=$(for t in /proc/"$PID"/task/*; do [ "$(cat "$t/comm")" = keiko-loop-0 ] && basename "$t"; done)
  [ -n "$LOOP_TID" ] || die "no keiko-loop-0 thread in process $PID"
  if [ -n "$RENDERS_CPU" ]; then
    for t in /proc/"$PID"/task/*; do
      case "$(cat "$t/comm")" in keiko-render-*|keiko-presets) taskset -p -c "$RENDERS_CPU" "$(basename "$t")" >/dev/null ;; esac
    done
  fi
}

loop_ticks() { local stat; read -r stat <"/proc/$PID/task/$LOOP_TID/stat"; local f; read -r -a f <<<"${stat##*) }"; echo $((f[11] + f[12])); }
metric() { curl -s "http://$ADDR/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

echo "mode round req/s p99_ms loop_us_per_req renders_done cancelled peak_rss_mb flood" >"$TMP/runs"
run() {  # run MODE ROUND
  local mode=$1 round=$2 flood_pid="" t0 t1 r0 r1 c0 c1 peak=0 rss reqs p99 flood="-"
  start_keiko
  taskset -c 1 wrk -t1 -c32 -d1s "http://$ADDR/" >/dev/null
  r0=$(metric keiko_render_duration_seconds_count); c0=$(metric keiko_renders_cancelled_total)
  if [ "$mode" = flood ] && [ -n "$SPIN" ]; then
    taskset -c 0 chrt --idle 0 sh -c 'while :; do :; done' &
    flood_pid=$!
    track_pid "$flood_pid"
  elif [ "$mode" = flood ]; then
    taskset -c 1 python3 "$ROOT/scripts/flood.py" "$ADDR" astronaut.png "$DURATION" "$RATE" >"$TMP/flood.out" &
    flood_pid=$!
    track_pid "$flood_pid"
  fi
  t0=$(loop_ticks)
  taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" --latency "http://$ADDR/" >"$TMP/wrk.out" &
  local wrk_pid=$!
  track_pid "$wrk_pid"
  while lib_alive "$wrk_pid"; do
    rss=$(rss_kb "$PID"); [ "$rss" -gt "$peak" ] && peak=$rss
    sleep 0.2
  done
  wait "$wrk_pid" || die "wrk failed: $(cat "$TMP/wrk.out")"
  t1=$(loop_ticks)
  if [ -n "$SPIN" ] && [ -n "$flood_pid" ]; then
    stop_pid "$flood_pid"
  elif [ -n "$flood_pid" ]; then
    wait "$flood_pid" || true
    flood=$(tr -d ' ' <"$TMP/flood.out")
  fi
  r1=$(metric keiko_render_duration_seconds_count); c1=$(metric keiko_renders_cancelled_total)
  reqs=$(awk '/requests in/ { print $1 }' "$TMP/wrk.out")
  p99=$(awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 } print v }' "$TMP/wrk.out")
  awk -v m="$mode" -v r="$round" -v n="$reqs" -v d="$DURATION" -v p="$p99" -v t="$((t1 - t0))" \
      -v hz="$(getconf CLK_TCK)" -v rd="$(( ${r1%.*} - ${r0%.*} ))" -v cx="$(( ${c1%.*} - ${c0%.*} ))" \
      -v rss="$peak" -v f="$flood" \
      'BEGIN { printf "%s %s %.0f %.2f %.2f %d %d %.0f %s\n", m, r, n / d, p, t / hz * 1e6 / n, rd, cx, rss / 1024, f }' \
      >>"$TMP/runs"
  log "$(tail -n 1 "$TMP/runs")"
  stop_pid "$PID"
}

log "keiko pinned to CPU 0, a fresh one for every run"
for round in $(seq "$ROUNDS"); do
  run quiet "$round"
  run flood "$round"
done

python3 - "$TMP/runs" "$ROUNDS" "$DURATION" "$RATE" "$RENDERS_CPU" >"$TMP/table" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
def med(mode, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == mode)
where = f"render threads on CPU {sys.argv[5]}" if sys.argv[5] else "render threads beside it"
print(f"GET / with the event loop pinned to CPU 0 ({where}), {sys.argv[2]} interleaved round(s) of {sys.argv[3]} s, flood at {sys.argv[4]} renditions/s (medians)\n")
print("| run | GET / req/s | p99 ms | event loop µs/req | renders finished | renders cancelled | peak RSS MB |")
print("|---|---:|---:|---:|---:|---:|---:|")
for mode in ("quiet", "flood"):
    print(f"| {mode} | {med(mode, 2):,.0f} | {med(mode, 3):.2f} | {med(mode, 4):.2f} | {med(mode, 5):.0f} | {med(mode, 6):.0f} | {med(mode, 7):.0f} |")
print(f"\nflood / quiet: µs/req {med('flood', 4) / med('quiet', 4):.2f}x, p99 {med('flood', 3) / max(med('quiet', 3), 1e-9):.2f}x\n")
print("runs: " + "; ".join(" ".join(r) for r in rows))
PY
cat "$TMP/table"
[ -z "$OUT" ] || cp "$TMP/table" "$OUT"
