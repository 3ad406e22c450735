#!/usr/bin/env bash
# A private Docker daemon for CI and tests: its data, state, socket, pidfile and log
# all live under one directory, so it neither needs nor disturbs the host's daemon.
#
#   scripts/dockerd.sh start DIR          start it (or find it running); print DOCKER_HOST
#   scripts/dockerd.sh stop DIR [--purge] stop it; --purge also unmounts and removes DIR
#
# Keep DIR short (mktemp -d /tmp/dmd.XXXX): containerd's sockets live under it, and a
# unix socket path holds at most 107 bytes. It runs with --iptables=false and shares
# the host's docker0 bridge if one exists; DOCKERD_EXTRA_ARGS adds flags (--bip, …).
set -euo pipefail

say() { printf '%s\n' "$*"; }
note() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
usage() { die "usage: $0 start DIR | stop DIR [--purge]"; }

[ $# -ge 2 ] || usage
action=$1
case "$action:${3:-}" in
  start: | stop: | stop:--purge) ;;
  *) usage ;;
esac
dir=$(realpath -m -- "$2")
readonly dir
readonly sock=$dir/docker.sock pidfile=$dir/docker.pid log=$dir/dockerd.log
readonly containerd_dir=$dir/exec/containerd
readonly host=unix://$sock

# The pid in $1 if that process is alive and its command line holds $2 (a pid can be
# reused by an unrelated process after ours is gone).
live_pid() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2" || return 1
  say "$pid"
}

answers() { docker -H "$host" info >/dev/null 2>&1; }

start() {
  command -v dockerd >/dev/null || die "dockerd is missing (apt-get install docker.io)"
  command -v docker >/dev/null || die "the docker command is missing (apt-get install docker.io)"
  [ "$(id -u)" = 0 ] || die "a private dockerd needs root"
  local longest=$containerd_dir/containerd.sock.ttrpc
  [ "${#longest}" -lt 108 ] || die "$dir is too long for unix socket paths; use mktemp -d /tmp/dmd.XXXX"

  mkdir -p "$dir"
  if live_pid "$pidfile" "--pidfile $pidfile" >/dev/null && answers; then
    note "dockerd already runs for $dir"
    say "$host"
    return
  fi
  local -a extra=()
  read -ra extra <<<"${DOCKERD_EXTRA_ARGS:-}"
  if [ -e /sys/class/net/docker0 ] && [[ " ${extra[*]} " != *" --bridge"* ]]; then
    note "note: docker0 exists; if another daemon uses it, give this one its own bridge" \
      "(DOCKERD_EXTRA_ARGS=--bridge=NAME), or their containers' addresses may clash"
  fi
  mkdir -p "$dir/data" "$dir/exec"
  setsid dockerd --iptables=false --data-root "$dir/data" --exec-root "$dir/exec" \
    -H "$host" --pidfile "$pidfile" "${extra[@]}" </dev/null >"$log" 2>&1 &
  local pid=$! delay=0.05 deadline=$((SECONDS + 60))
  until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2
      die "dockerd exited before it answered (log: $log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      kill "$pid" 2>/dev/null || true
      tail -n 20 "$log" >&2
      die "dockerd did not answer on $sock within 60 s (log: $log)"
    fi
    sleep "$delay"
    delay=$(awk -v d="$delay" 'BEGIN { d *= 2; print (d > 1 ? 1 : d) }')
  done
  note "dockerd $(docker -H "$host" version --format '{{ .Server.Version }}') answers on $sock"
  say "$host"
}

# Wait until none of the pids is alive; 0 if they all went within $1 seconds.
wait_gone() {
  local deadline=$((SECONDS + $1)) pid alive
  shift
  while :; do
    alive=
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ -n "$alive" ] || return 0
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

unmount_under() {
  local target
  findmnt -rn -o TARGET | awk -v p="$1/" 'index($0, p) == 1' | sort -r \
    | while read -r target; do
      umount "$target" 2>/dev/null || umount -l "$target" || note "cannot unmount $target"
    done
}

stop() {
  local dockerd_pid containerd_pid pid
  local -a pids=()
  [ -d "$dir" ] || { note "$dir does not exist: nothing to stop"; return; }
  dockerd_pid=$(live_pid "$pidfile" "--pidfile $pidfile") || dockerd_pid=
  containerd_pid=$(live_pid "$containerd_dir/containerd.pid" "$containerd_dir/") || containerd_pid=
  for pid in $dockerd_pid $containerd_pid; do pids+=("$pid"); done
  if [ ${#pids[@]} -gt 0 ]; then
    # dockerd stops its containers (up to 15 s each, in parallel), then its containerd.
    [ -z "$dockerd_pid" ] || kill -TERM "$dockerd_pid" 2>/dev/null || true
    [ -n "$dockerd_pid" ] || kill -TERM "$containerd_pid" 2>/dev/null || true
    if ! wait_gone 60 "${pids[@]}"; then
      note "dockerd for $dir did not stop within 60 s; killing it"
      kill -KILL "${pids[@]}" 2>/dev/null || true
      # Shims of containers it could not stop belong to this daemon alone.
      for pid in $(pgrep -f -- "-address $containerd_dir/containerd.sock" || true); do
        kill -KILL "$pid" 2>/dev/null || true
      done
      wait_gone 10 "${pids[@]}" || die "dockerd for $dir survives SIGKILL"
    fi
    note "dockerd for $dir stopped"
  else
    note "no dockerd runs for $dir"
  fi
  if [ "${1:-}" = --purge ]; then
    unmount_under "$dir"
    rm -rf --one-file-system "$dir"
    note "removed $dir"
  fi
}

case "$action" in
  start) start ;;
  stop) stop "${3:-}" ;;
esac
