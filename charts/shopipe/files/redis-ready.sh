#!/bin/sh
# Readiness of a Redis pod: it answers, and a replica is in sync with its master
# (master_link_status:up). A rolling update waits for this before it takes the next pod, so it
# never stops the master while the only other copy is still loading or syncing.
set -eu
info="$(REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli --no-auth-warning -p "${REDIS_PORT:-6379}" \
    --raw INFO replication 2>/dev/null | tr -d '\r')" || exit 1
case "$info" in
    *role:master*) exit 0 ;;
    *master_link_status:up*) exit 0 ;;
esac
echo "redis-ready: replica not in sync with its master yet"
exit 1
