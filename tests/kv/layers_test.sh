#!/usr/bin/env bash
# Checks the include rule of apps/kv (apps/kv/README.md, "Which way the
# includes run"): protocols -> db -> store, the log beside the store, nothing
# upward. Each rule: files, then the kv headers they may include.
#   layers_test.sh SOURCE_ROOT
set -euo pipefail
cd "${1:?usage: layers_test.sh SOURCE_ROOT}/apps/kv"

db_layer='db\.hpp|forward\.hpp|persistence_setup\.hpp|client_log\.hpp'
bad=0
check() {  # check ALLOWED_REGEX FILE...
  local allowed=$1 f inc
  shift
  for f in "$@"; do
    while IFS= read -r inc; do
      if [[ ! $inc =~ ^($allowed)$ ]]; then
        echo "FAIL: $f includes \"$inc\" (allowed: $allowed)" >&2
        bad=1
      fi
    done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f" | grep -v '^percore/' || true)
  done
}

check 'store/.*' store/*.?pp
check 'store/.*|log/.*' log/*.?pp
check "store/.*|log/.*|$db_layer" db.?pp forward.hpp persistence_setup.?pp client_log.hpp
check "store/.*|memcache/.*|$db_layer" memcache/*.?pp
check "store/.*|resp/.*|server\.hpp|$db_layer" resp/*.?pp
check "$db_layer" server.hpp
check "server\.hpp|memcache/.*|$db_layer" server.cpp
((bad == 0)) && echo "ok: apps/kv includes follow the layering"
exit "$bad"
