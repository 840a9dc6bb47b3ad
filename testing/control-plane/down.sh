#!/usr/bin/env bash
# Stops what up.sh started in STATE_DIR (SIGTERM, then SIGKILL after 10 s) and removes etcd's data.
# Usage: down.sh STATE_DIR [--keep]   (--keep leaves the data and logs in place)
set -uo pipefail
state="${1:?usage: down.sh STATE_DIR [--keep]}"
[ -f "$state/pids" ] || exit 0
# Stop in reverse start order: clients before the API server, the API server before etcd.
pids=$(tac "$state/pids" | awk '{print $2}')
for p in $pids; do kill "$p" 2>/dev/null; done
for _ in $(seq 1 50); do
  alive=0
  for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.2
done
for p in $pids; do kill -9 "$p" 2>/dev/null; done
: >"$state/pids"
if [ "${2:-}" != "--keep" ]; then rm -rf "$state/etcd"; fi
exit 0
