#!/bin/sh
# Writes sentinel.conf for this pod before Sentinel starts (init container, official redis image).
# A restarted Sentinel learns the current master from its peers, else from the Redis pods' ROLE,
# else from its own saved state, so it never points back at an old master. Sentinel rewrites
# this file as it learns: it lives in the pod's memory, or on a volume when
# redis.sentinel.persistence is on (then it survives the pod, for a full restart).
set -eu
. "$(dirname "$0")/redis-lib.sh"

: "${REDIS_PASSWORD:?}" "${SENTINEL_PASSWORD:?}" "${MASTER_NAME:?}" "${QUORUM:?}"
: "${REDIS_STS:?}" "${REDIS_HEADLESS:?}" "${REDIS_REPLICAS:?}"
: "${SENTINEL_STS:?}" "${SENTINEL_HEADLESS:?}" "${SENTINEL_REPLICAS:?}" "${CONF_DIR:?}"

me="$(hostname).${SENTINEL_HEADLESS}"
master="$(sentinels_say "$me")"
if [ -z "$master" ]; then
    # No peer knows: ask the Redis pods which one is a master now.
    for r in $(pods "$REDIS_STS" "$REDIS_HEADLESS" "$REDIS_REPLICAS"); do
        role="$(REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli --no-auth-warning -h "$r" -p 6379 \
            --raw ROLE 2>/dev/null | head -n 1 || true)"
        if [ "$role" = "master" ]; then master="$r"; break; fi
    done
fi
# The state this Sentinel wrote last time (Sentinel rewrites its file at every change: master,
# epochs), kept when its directory is a volume (redis.sentinel.persistence): after a full restart
# nobody runs, and it is what remembers the master. Its known-replica and known-sentinel lines are
# not carried: a Sentinel relearns both within seconds (the master's INFO, the hello channel), and
# a line naming a pod whose DNS name is gone (scaled down, not yet scheduled) makes Valkey refuse
# to start ("Unrecognized sentinel configuration statement", checked with Valkey 9.1).
prev="$CONF_DIR/sentinel.conf"
epochs=""
if [ -f "$prev" ]; then
    epochs="$(grep -E "^sentinel (current-epoch|(config|leader)-epoch ${MASTER_NAME}) " "$prev" || true)"
    if [ -z "$master" ]; then
        master="$(sed -n "s/^sentinel monitor ${MASTER_NAME} \([^ ]*\) .*/\1/p" "$prev" | head -n 1)"
        [ -z "$master" ] || echo "sentinel-init: nobody answered; the master of the saved state is $master"
    fi
fi
if [ -z "$master" ]; then
    master="${REDIS_STS}-0.${REDIS_HEADLESS}"
    echo "sentinel-init: nobody answered; monitoring the bootstrap master $master"
else
    echo "sentinel-init: monitoring $master"
fi

# The same myid on every start of this pod: its peers recognise a restarted Sentinel instead of
# counting a new one (a random id leaves stale entries that inflate the Sentinel count).
myid="$(printf '%s/%s' "$MASTER_NAME" "$me" | sha1sum | cut -c1-40)"

umask 077
# Written beside, then moved over the old file: never half a file on the volume, always 0600.
new="$CONF_DIR/.sentinel.conf.new"
cat > "$new" <<CONF
port 26379
sentinel myid ${myid}
# Host names, not pod IPs: IPs change on every restart, the StatefulSet names do not.
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip ${me}
$(auth_lines "$SENTINEL_PASSWORD" "${SENTINEL_EXTRA_PASSWORD:-}")
sentinel sentinel-pass "${SENTINEL_PASSWORD}"
sentinel monitor ${MASTER_NAME} ${master} 6379 ${QUORUM}
sentinel auth-pass ${MASTER_NAME} "${REDIS_PASSWORD}"
sentinel down-after-milliseconds ${MASTER_NAME} ${DOWN_AFTER_MS:-5000}
sentinel failover-timeout ${MASTER_NAME} ${FAILOVER_TIMEOUT_MS:-60000}
sentinel parallel-syncs ${MASTER_NAME} 1
CONF
# Epochs never go back: a Sentinel that forgot them could vote in an election already held.
[ -z "$epochs" ] || printf '%s\n' "$epochs" >> "$new"
mv -f "$new" "$CONF_DIR/sentinel.conf"
