# Functions shared by redis-init.sh and sentinel-init.sh (sourced; POSIX sh, official redis image).

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
