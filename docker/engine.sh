#!/usr/bin/env bash
# A Docker engine for `make docker-images` / `make test-docker` on a Debian/Ubuntu host (as root):
# installs docker.io, docker-compose and debootstrap if missing and starts dockerd if none answers. Without
# iptables (rootless VMs, CI), builds and the tests use the host network or published ports.
set -euo pipefail
docker_cli() { if [ -x /usr/bin/docker ]; then /usr/bin/docker "$@"; else docker "$@"; fi; }
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || ! command -v docker-compose >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "docker/engine.sh: run as root to install docker.io" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io docker-compose debootstrap >/dev/null
fi
if ! docker_cli info >/dev/null 2>&1; then
    echo "[engine] starting dockerd (log: /tmp/pg_imgembed-dockerd.log)"
    nohup dockerd --iptables=false --storage-driver=overlay2 >/tmp/pg_imgembed-dockerd.log 2>&1 &
    for _ in $(seq 60); do docker_cli info >/dev/null 2>&1 && break; sleep 1; done
    docker_cli info >/dev/null
fi
