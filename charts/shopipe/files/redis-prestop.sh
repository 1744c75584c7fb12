#!/bin/sh
# preStop of a Redis pod: when it is the master, ask the Sentinels to fail over to a replica and
# wait (bounded by PRESTOP_WAIT_SECONDS, under terminationGracePeriodSeconds) until it is no longer
# the master, so a rolling update or a drain never kills the master outright. Always exits 0:
# a hook that fails only delays the stop.
set -u
: "${REDIS_PASSWORD:?}" "${SENTINEL_PASSWORD:?}" "${MASTER_NAME:?}"
: "${SENTINEL_STS:?}" "${SENTINEL_HEADLESS:?}" "${SENTINEL_REPLICAS:?}"

role() {
    REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli --no-auth-warning -p 6379 --raw ROLE \
        2>/dev/null | head -n 1
}

[ "$(role)" = "master" ] || exit 0

i=0
asked=""
while [ "$i" -lt "$SENTINEL_REPLICAS" ]; do
    s="${SENTINEL_STS}-${i}.${SENTINEL_HEADLESS}"
    reply="$(REDISCLI_AUTH="$SENTINEL_PASSWORD" timeout 3 redis-cli --no-auth-warning -h "$s" \
        -p 26379 --raw SENTINEL FAILOVER "$MASTER_NAME" 2>/dev/null | head -n 1)"
    if [ "$reply" = "OK" ]; then asked="$s"; break; fi
    i=$((i + 1))
done
if [ -z "$asked" ]; then
    echo "redis-prestop: no Sentinel accepted a failover; stopping as master" >&2
    exit 0
fi
waited=0
while [ "$waited" -lt "${PRESTOP_WAIT_SECONDS:-20}" ]; do
    [ "$(role)" = "master" ] || { echo "redis-prestop: failed over (asked $asked)"; exit 0; }
    sleep 1
    waited=$((waited + 1))
done
echo "redis-prestop: still master after ${PRESTOP_WAIT_SECONDS:-20}s" >&2
exit 0
