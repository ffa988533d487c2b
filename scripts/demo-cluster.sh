#!/usr/bin/env bash
# The demo's cluster (.demo/cluster), for make:
#   check  before make demo's installs: the cluster will run as the checkout's owner under sudo,
#          else as postgres, which must be able to enter every directory down to the checkout;
#   stop   stop it if it runs (make clean), as the user it runs as.
# Failures are one line on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
data=$here/.demo/cluster/data
fail() { echo "make demo: $*" >&2; exit 1; }

# The user the cluster runs as: the checkout's owner under sudo (as the Makefile decides), else
# postgres when root, else whoever runs make.
cluster_user() {
    if [ "$(id -u)" != 0 ]; then id -un
    elif [ -n "${SUDO_UID:-}" ] && [ "$SUDO_UID" != 0 ] && [ "$(stat -c %u .)" = "$SUDO_UID" ]; then echo "$SUDO_USER"
    else echo postgres
    fi
}

check() {
    [ "$(cluster_user)" = postgres ] || return 0
    local dir=$here
    while [ "$dir" != / ]; do
        # postgres is neither owner nor group of these: it needs the "others" search bit.
        if [ "$(stat -c %U "$dir")" != postgres ] && [ $(( 0$(stat -c %a "$dir") & 1 )) = 0 ]; then
            fail "the demo's cluster would run as postgres, which cannot enter $dir (mode $(stat -c %a "$dir")):" \
                 "run sudo make demo as the user who owns this checkout, or use a checkout postgres can reach"
        fi
        dir=$(dirname "$dir")
    done
}

stop() {
    [ -f "$data/postmaster.pid" ] || return 0
    local pg_ctl owner
    pg_ctl=/usr/lib/postgresql/$(cat "$data/PG_VERSION")/bin/pg_ctl
    owner=$(stat -c %U "$data")
    local run=()
    [ "$(id -u)" = 0 ] && [ "$owner" != root ] && run=(runuser -u "$owner" --)
    if (cd / && "${run[@]}" "$pg_ctl" -D "$data" status >/dev/null 2>&1); then
        echo "stopping the demo cluster ($data)"
        (cd / && "${run[@]}" "$pg_ctl" -D "$data" -m fast -w stop >/dev/null) \
            || { echo "make clean: could not stop the demo cluster ($data)" >&2; exit 1; }
    fi
}

case ${1:-} in
    check) check ;;
    stop) stop ;;
    *) echo "usage: $0 check|stop" >&2; exit 2 ;;
esac
