#!/usr/bin/env bash
# make test-fresh: the README's commands, run as a new user runs them, on fresh Debian machines.
#
# For each suite named (make test-fresh: bookworm and trixie, Debian 12 and 13), a
# container from a debootstrap base (minbase plus sudo, git, make, ca-certificates, adduser: no PostgreSQL,
# no Python) gets an ordinary user with a 0700 home (adduser's default), and the committed HEAD of
# this checkout cloned there. As that user it runs, in the clone: `sudo make demo`, `sudo make
# test`, a check that everything in the clone belongs to the user, then the README's "Using it
# from Python" blocks (the venv, the Python examples, the CLI lines) exactly as written.
# pip in the container reaches PyPI as a user's would: nothing of this host's pip configuration,
# wheel mirrors or caches goes in. Behind a TLS-intercepting proxy, hand its CA bundle in with
# FRESH_CA=/path/to/bundle.crt (default: this host's system bundle), installed as the container's
# system CA store, the way such a user's machine has it.
# Prints wall time and disk use per step; the first failing step stops the run with its name.
set -euo pipefail
cd "$(dirname "$0")/.."
docker_cli() { if [ -x /usr/bin/docker ]; then /usr/bin/docker "$@"; else docker "$@"; fi; }

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bookworm)
ca=${FRESH_CA:-/etc/ssl/certs/ca-certificates.crt}

work=$(mktemp -d)
chmod 755 "$work"  # the container's user reads the bundle
containers=()
cleanup() {
    for c in "${containers[@]}"; do docker_cli rm -f "$c" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# The committed HEAD, as a clone would get it (uncommitted changes are not part of the test).
git bundle create "$work/pg_imgembed.bundle" HEAD 2>/dev/null
git show HEAD:docker/fresh-steps.sh > "$work/fresh-steps.sh"
[ -s "$ca" ] && cp "$ca" "$work/proxy-ca.crt"
echo "[fresh] testing $(git rev-parse --short HEAD) on: ${suites[*]}"

# local/<suite>:fresh, made once with debootstrap from this host's own apt mirror.
base_image() {
    local suite=$1 image=local/$1:fresh
    if ! docker_cli image inspect "$image" >/dev/null 2>&1; then
        local mirror rootfs
        mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
        [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)
        rootfs=$(mktemp -d)
        echo "[fresh] making $image with debootstrap from $mirror" >&2
        debootstrap --variant=minbase --include=sudo,git,make,ca-certificates,adduser "$suite" "$rootfs" "$mirror" >/dev/null
        tar -C "$rootfs" -c . | docker_cli import - "$image" >/dev/null
        rm -rf "$rootfs"
    fi
    echo "$image"
}

status=0
for suite in "${suites[@]}"; do
    image=$(base_image "$suite")
    name=pg_imgembed-fresh-$suite-$$
    containers+=("$name")
    echo "[fresh] $suite: container $name from $image"
    started=$(date +%s)
    # host network: no NAT on a bridge without iptables, and the registries are reached as from the host.
    # /dev/shm as a machine has it (Docker's default is 64 MB: parallel HNSW builds need more).
    if docker_cli run --name "$name" --network host --shm-size=2g -v "$work:/fresh:ro" "$image" bash /fresh/fresh-steps.sh; then
        echo "[fresh] $suite: passed in $(( $(date +%s) - started )) s"
    else
        echo "[fresh] $suite: FAILED after $(( $(date +%s) - started )) s" >&2
        status=1
    fi
    docker_cli rm -f "$name" >/dev/null
done
exit $status
