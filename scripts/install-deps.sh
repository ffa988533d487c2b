#!/usr/bin/env bash
# Installs what pg_imgembed needs on Debian/Ubuntu, only what is missing:
# PostgreSQL server + plpython3u + server headers, pgvector, and the Python runtime that
# PL/Python imports (a venv made from the server's own /usr/bin/python3).
# Idempotent: a second run finds everything present and changes nothing.
set -euo pipefail
umask 022

RUNTIME_DIR=${RUNTIME_DIR:-/usr/local/lib/pg_imgembed}
# onnxruntime's build for the runtime: onnxruntime (CPU), or onnxruntime-gpu[cuda,cudnn] for CUDA
# (CUDA and cuDNN then come as pip packages; the host needs only the NVIDIA driver).
ONNXRUNTIME=${ONNXRUNTIME:-onnxruntime}
PGVECTOR_VERSION=0.8.0
here=$(cd "$(dirname "$0")/.." && pwd)

log() { printf '[install-deps] %s\n' "$*"; }
need_root() { [ "$(id -u)" = 0 ] || { echo "install-deps: run as root (apt, /usr/share/postgresql)" >&2; exit 1; }; }

apt_updated=0
apt_install() {
    local missing=()
    for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    need_root
    if [ $apt_updated = 0 ]; then apt-get update -qq; apt_updated=1; fi
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The server major: PG_MAJOR if given, else the newest installed, else the distribution's default
# (postgresql-common's supported-versions prints the versions this release packages, newest last).
pg_major() {
    if [ -n "${PG_MAJOR:-}" ]; then echo "$PG_MAJOR"; return; fi
    local v
    v=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1 || true)
    if [ -z "$v" ]; then
        apt_install postgresql-common >&2
        v=$(/usr/share/postgresql-common/supported-versions 2>/dev/null | tail -1 || true)
    fi
    echo "$v"
}

PG=$(pg_major)
case $PG in
    [1-9]*) ;;
    *) echo "install-deps: cannot tell which PostgreSQL to install (none under /usr/lib/postgresql," \
            "and postgresql-common's supported-versions named none): set PG_MAJOR, e.g. PG_MAJOR=15" >&2
       exit 1 ;;
esac
PG_CONFIG=/usr/lib/postgresql/$PG/bin/pg_config
apt_install ca-certificates make gcc libc6-dev python3 python3-venv \
    "postgresql-$PG" "postgresql-plpython3-$PG" "postgresql-server-dev-$PG"
SHAREDIR=$($PG_CONFIG --sharedir)

# The Debian mirror this host's (or image's) apt already uses, so hosts behind a local mirror or a
# proxy fetch the source package the same way; nothing here names a mirror of its own.
debian_mirror() {
    local found
    found=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$found" ] || found=$(awk '$1 == "deb" && $0 !~ /security/ {print ($2 ~ /^\[/ ? $3 : $2); exit}' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    [ -n "$found" ] || { echo "install-deps: no Debian mirror found in /etc/apt sources" >&2; exit 1; }
    echo "$found"
}

install_pgvector() {
    if [ -f "$SHAREDIR/extension/vector.control" ]; then return 0; fi
    if apt-cache show "postgresql-$PG-pgvector" >/dev/null 2>&1 || { apt-get update -qq && apt-cache show "postgresql-$PG-pgvector" >/dev/null 2>&1; }; then
        apt_install "postgresql-$PG-pgvector"; return 0
    fi
    # No distribution package (Debian bookworm): build Debian trixie's source package with PGXS,
    # using a private apt configuration so the system's sources stay untouched.
    log "building pgvector $PGVECTOR_VERSION from Debian's source package"
    apt_install dpkg-dev debian-archive-keyring
    local aptx src mirror
    aptx=$(mktemp -d) src=$(mktemp -d)
    mkdir -p "$aptx/lists/partial"
    mirror=$(debian_mirror)
    cat > "$aptx/trixie-src.sources" <<X
Types: deb-src
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
X
    local opts=(-oDir::Etc::SourceList=/dev/null -oDir::Etc::SourceParts="$aptx" -oDir::State::Lists="$aptx/lists")
    apt-get "${opts[@]}" update -qq
    (cd "$src" && apt-get "${opts[@]}" source --download-only "pgvector=$PGVECTOR_VERSION-*" >/dev/null 2>&1 \
        || apt-get "${opts[@]}" source --download-only pgvector >/dev/null)
    tar xzf "$src"/pgvector_*.orig.tar.gz -C "$src"
    # OPTFLAGS="" drops -march=native so the library runs on any x86-64.
    make -s -C "$src"/pgvector-* OPTFLAGS="" PG_CONFIG="$PG_CONFIG" -j"$(nproc)" >/dev/null
    make -s -C "$src"/pgvector-* OPTFLAGS="" PG_CONFIG="$PG_CONFIG" install >/dev/null
    rm -rf "$aptx" "$src"
}
install_pgvector

# The runtime PL/Python imports. It must be readable by the postgres user (not under /root).
install_runtime() {
    local venv=$RUNTIME_DIR/venv
    if [ ! -x "$venv/bin/python" ]; then
        need_root
        log "creating runtime venv $venv"
        mkdir -p "$RUNTIME_DIR"
        /usr/bin/python3 -m venv "$venv"
    fi
    # The pinned requirements, with the chosen onnxruntime build at the pinned version.
    local requirements
    requirements=$(mktemp)
    sed "s/^onnxruntime==/$ONNXRUNTIME==/" "$here/requirements-runtime.txt" > "$requirements"
    # pip is only run when a pinned requirement is missing, so a second run touches nothing.
    if ! "$venv/bin/python" - "$requirements" <<'PY'
import re, sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split('#')[0].strip()
    if not line: continue
    name, want = line.split('==')
    try:
        if version(re.sub(r"\[.*\]", "", name)) != want: sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
    then
        # Both builds install the module onnxruntime: drop the other one first.
        local other=onnxruntime-gpu
        case $ONNXRUNTIME in onnxruntime-gpu*) other=onnxruntime ;; esac
        "$venv/bin/pip" uninstall -q -y "$other" >/dev/null 2>&1 || true
        log "installing runtime packages into $venv ($ONNXRUNTIME)"
        "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
    fi
    rm -f "$requirements"
}
install_runtime
echo "PG_CONFIG=$PG_CONFIG"
