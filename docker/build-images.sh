#!/usr/bin/env bash
# Builds the images: pg_imgembed:cpu (also tagged pg_imgembed:test, what `make test-docker`
# runs) and, with CUDA=1, pg_imgembed:cuda. The base is the public debian:trixie-slim; where no
# registry answers, a local Debian 13 image made with debootstrap from this host's own apt mirror.
# pip inside the build gets this host's CA bundle as a build secret (proxies that intercept TLS),
# never baked into the image.
set -euo pipefail
cd "$(dirname "$0")/.."
docker_cli() { if [ -x /usr/bin/docker ]; then /usr/bin/docker "$@"; else docker "$@"; fi; }

base=${BASE:-debian:trixie-slim}
if ! docker_cli image inspect "$base" >/dev/null 2>&1 && ! docker_cli pull -q "$base" >/dev/null 2>&1; then
    base=local/trixie:minbase
    if ! docker_cli image inspect "$base" >/dev/null 2>&1; then
        mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
        [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)
        rootfs=$(mktemp -d)
        echo "[images] no registry: making $base with debootstrap from $mirror"
        debootstrap --variant=minbase trixie "$rootfs" "$mirror" >/dev/null
        tar -C "$rootfs" -c . | docker_cli import - "$base" >/dev/null
        rm -rf "$rootfs"
    fi
fi
secret=()
[ -s /etc/ssl/certs/ca-certificates.crt ] && secret=(--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt)
build() {  # tag, extra args...
    local tag=$1; shift
    echo "[images] building $tag on $base"
    DOCKER_BUILDKIT=1 docker_cli build --network host --build-arg BASE="$base" "${secret[@]}" \
        -f docker/Dockerfile -t "$tag" "$@" .
}
build pg_imgembed:cpu
docker_cli tag pg_imgembed:cpu pg_imgembed:test
if [ "${CUDA:-0}" = 1 ]; then
    build pg_imgembed:cuda --build-arg ONNXRUNTIME="onnxruntime-gpu[cuda,cudnn]"
fi
docker_cli images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^pg_imgembed:'
