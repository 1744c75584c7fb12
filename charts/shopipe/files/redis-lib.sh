# Functions shared by redis-init.sh and sentinel-init.sh (sourced; POSIX sh, official redis image).
# The pods' names come from the environment both scripts get: REDIS_STS, REDIS_HEADLESS,
# REDIS_REPLICAS, SENTINEL_STS, SENTINEL_HEADLESS, SENTINEL_REPLICAS, MASTER_NAME and passwords.

# The password lines of a redis.conf or sentinel.conf: $1 the password everybody uses, $2 a
# second one accepted too while rotating (docs/operations.md), or empty. requirepass holds one
# password only: with two, an ACL rule of the default user takes both.
auth_lines() {
    if [ -n "$2" ]; then
        echo "user default on \">$1\" \">$2\" ~* &* +@all"
    else
        echo "requirepass \"$1\""
    fi
}

# One line about the Redis at host $1, port $2: "host role master_host link offset" (master_host
# and link "-" on a master); nothing when it does not answer.
redis_survey() {
    info="$(REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli --no-auth-warning -h "$1" -p "$2" \
        --raw INFO replication 2>/dev/null | tr -d '\r' || true)"
    role="$(printf '%s\n' "$info" | sed -n 's/^role://p')"
    [ -n "$role" ] || return 0
    mh="$(printf '%s\n' "$info" | sed -n 's/^master_host://p')"
    link="$(printf '%s\n' "$info" | sed -n 's/^master_link_status://p')"
    off="$(printf '%s\n' "$info" | sed -n 's/^master_repl_offset://p')"
    echo "$1 $role ${mh:--} ${link:--} ${off:-0}"
}

# The master to follow, from redis_survey lines on stdin; $1 is this pod's own host name.
# Nothing when no line came. A running master wins (the highest offset if there are several).
# Else the replica with the highest replication offset holds the most: follow the master it is
# still linked to, else that replica itself (its master is gone, and it is the one a Sentinel
# would promote). Except when its master is this very pod, restarting: then this pod leads, or
# the two would replicate from each other in a loop.
choose_master() {
    m=""; m_off=-1; r=""; r_off=-1; r_master=""; r_link=""
    while read -r host role mh link off; do
        case "$off" in ''|*[!0-9]*) off=0 ;; esac
        if [ "$role" = master ] && [ "$off" -gt "$m_off" ]; then
            m="$host"; m_off="$off"
        elif [ "$role" = slave ] && [ "$off" -gt "$r_off" ]; then
            r="$host"; r_off="$off"; r_master="$mh"; r_link="$link"
        fi
    done
    if [ -n "$m" ]; then
        echo "$m"
    elif [ -n "$r" ]; then
        if [ "$r_link" = up ] || [ "$r_master" = "$1" ]; then echo "$r_master"; else echo "$r"; fi
    fi
}

# The host names of the pods of StatefulSet $1 (headless Service $2, $3 replicas), one a line.
pods() {
    i=0
    while [ "$i" -lt "$3" ]; do
        echo "$1-${i}.$2"
        i=$((i + 1))
    done
}

# The master the Sentinels report: the first answer of a Sentinel pod other than $1 (the caller's
# own host name, or empty); nothing when none answers.
sentinels_say() {
    for s in $(pods "$SENTINEL_STS" "$SENTINEL_HEADLESS" "$SENTINEL_REPLICAS"); do
        [ "$s" != "$1" ] || continue
        reply="$(REDISCLI_AUTH="$SENTINEL_PASSWORD" timeout 3 redis-cli --no-auth-warning -h "$s" \
            -p 26379 --raw SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1 || true)"
        case "$reply" in
            ""|*ERR*|*NOAUTH*|*WRONGPASS*) ;;
            *) echo "$reply"; return 0 ;;
        esac
    done
}

# One redis_survey line for each Redis pod other than $1 (the caller's own host name, or empty)
# that answers.
survey_pods() {
    for r in $(pods "$REDIS_STS" "$REDIS_HEADLESS" "$REDIS_REPLICAS"); do
        [ "$r" = "$1" ] || redis_survey "$r" 6379
    done
}
