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
master=""
i=0
while [ "$i" -lt "$SENTINEL_REPLICAS" ]; do
    s="${SENTINEL_STS}-${i}.${SENTINEL_HEADLESS}"
    reply="$(REDISCLI_AUTH="$SENTINEL_PASSWORD" timeout 3 redis-cli --no-auth-warning -h "$s" -p 26379 \
        --raw SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1 || true)"
    case "$reply" in
        ""|*ERR*|*NOAUTH*|*WRONGPASS*) ;;
        *) master="$reply"; break ;;
    esac
    i=$((i + 1))
done
if [ -z "$master" ]; then
    # No Sentinel answered (all restarted, or their state lost). Pod 0 is not a safe guess: it
    # may be a lagging replica. Ask the Redis pods still running: a master is followed; a replica
    # points at the master it follows; with several, the one that replicated most wins.
    best=""; best_off=-1
    i=0
    while [ "$i" -lt "${REDIS_REPLICAS:-0}" ]; do
        r="${REDIS_STS}-${i}.${REDIS_HEADLESS}"
        if [ "$r" != "$me" ]; then
            info="$(REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli --no-auth-warning -h "$r" -p 6379 \
                --raw INFO replication 2>/dev/null | tr -d '\r' || true)"
            role="$(printf '%s\n' "$info" | sed -n 's/^role://p')"
            case "$role" in
                master) cand="$r" ;;
                slave) cand="$(printf '%s\n' "$info" | sed -n 's/^master_host://p')" ;;
                *) cand="" ;;
            esac
            off="$(printf '%s\n' "$info" | sed -n 's/^master_repl_offset://p')"
            case "$off" in ''|*[!0-9]*) off=0 ;; esac
            if [ -n "$cand" ] && [ "$off" -gt "$best_off" ]; then best="$cand"; best_off="$off"; fi
        fi
        i=$((i + 1))
    done
    if [ -n "$best" ]; then
        master="$best"
        echo "redis-init: no Sentinel answered; the running Redis pods point at $master (offset $best_off)"
    else
        # Nobody runs: first start of the whole set, pod 0 leads.
        master="${REDIS_STS}-0.${REDIS_HEADLESS}"
        echo "redis-init: no Sentinel and no Redis answered; bootstrap master is $master"
    fi
else
    echo "redis-init: Sentinels report master $master"
fi

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
