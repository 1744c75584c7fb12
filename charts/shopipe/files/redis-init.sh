#!/bin/sh
# Writes redis.conf for this pod before Redis starts (init container, official redis image).
# The master is whoever the Sentinels say it is now: after a failover that is no longer pod 0,
# and a restarted old master must come back as a replica, not as a second master.
# Passwords come from the environment (the Secret); they are written only to the pod's
# private emptyDir, never to a ConfigMap or the command line.
set -eu
. "$(dirname "$0")/redis-lib.sh"

: "${REDIS_PASSWORD:?}" "${SENTINEL_PASSWORD:?}" "${MASTER_NAME:?}"
: "${REDIS_HEADLESS:?}" "${SENTINEL_STS:?}" "${SENTINEL_HEADLESS:?}" "${SENTINEL_REPLICAS:?}"
: "${REDIS_STS:?}" "${REDIS_REPLICAS:?}" "${CONF_DIR:?}"

me="$(hostname).${REDIS_HEADLESS}"

# A pod with data restarts an existing set: when nobody answers at once (a full restart: the
# Sentinels are starting too, with their state on their volumes), wait for them rather than
# guess. Only a first start, with an empty volume, may lead without asking.
wait_until=0
if [ -n "$(ls -A "${DATA_DIR:-/data}" 2>/dev/null)" ]; then
    wait_until=$(( $(date +%s) + ${BOOT_WAIT_SECONDS:-120} ))
    echo "redis-init: this pod has data, so it waits for the Sentinels (up to ${BOOT_WAIT_SECONDS:-120} s)"
fi
while :; do
    master="$(sentinels_say "")"
    if [ -n "$master" ]; then
        echo "redis-init: Sentinels report master $master"
        break
    fi
    # No Sentinel answered. Pod 0 is not a safe guess: it may be a lagging replica. Ask the Redis
    # pods still running (redis-lib.sh, choose_master: a master, or the most replicated replica).
    master="$(survey_pods "$me" | choose_master "$me")"
    if [ -n "$master" ]; then
        echo "redis-init: no Sentinel answered; the running Redis pods point at $master"
        break
    fi
    if [ "$(date +%s)" -ge "$wait_until" ]; then
        # Nobody runs: first start of the whole set (or nobody came back in time), pod 0 leads.
        master="${REDIS_STS}-0.${REDIS_HEADLESS}"
        echo "redis-init: no Sentinel and no Redis answered; bootstrap master is $master"
        break
    fi
    echo "redis-init: nobody answers yet; asking again"
    sleep 2
done

umask 077
conf="$CONF_DIR/redis.conf"
{
    # The policy shared with the dev stack (files/redis.conf, beside this script), then what is
    # this pod's own; an override from the values comes last, and Redis keeps the last value.
    cat "$(dirname "$0")/redis.conf"
    cat <<CONF

# --- this pod ---
port 6379
bind * -::*
protected-mode no
dir /data
$(auth_lines "$REDIS_PASSWORD" "${REDIS_EXTRA_PASSWORD:-}")
masterauth "${REDIS_PASSWORD}"
# Replicas announce their stable DNS name, which Sentinel resolves (resolve-hostnames).
replica-announce-ip ${me}
CONF
    [ -z "${APPENDFSYNC:-}" ] || echo "appendfsync ${APPENDFSYNC}"
    [ -z "${MIN_REPLICAS_TO_WRITE:-}" ] || echo "min-replicas-to-write ${MIN_REPLICAS_TO_WRITE}"
    [ -z "${MIN_REPLICAS_MAX_LAG:-}" ] || echo "min-replicas-max-lag ${MIN_REPLICAS_MAX_LAG}"
    [ -z "${MAXMEMORY:-}" ] || echo "maxmemory ${MAXMEMORY}"
} > "$conf"
if [ "$master" != "$me" ]; then
    echo "replicaof ${master} 6379" >> "$conf"
    echo "redis-init: $me starts as a replica of $master"
else
    echo "redis-init: $me starts as the master"
fi
