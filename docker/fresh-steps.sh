#!/usr/bin/env bash
# Inside a fresh container (docker/test-fresh.sh): set the machine up as a user's would be, then
# run the README's commands as that user. Each step prints its wall time and the disk it took.
set -euo pipefail
user=alice
home=/home/$user
repo=$home/pg_imgembed

step_name=setup
trap 'echo "[fresh] FAILED at step: $step_name" >&2' ERR
disk_mb() { du -sxm / 2>/dev/null | cut -f1; }
sizes() {  # what the step left where: the checkout, the users' pip caches, apt's downloads
    local d out=()
    for d in "$repo" "$repo/.venv" "$repo/.demo/venv" "$repo/.demo/export-venv" /usr/local/lib/pg_imgembed "$home/.cache/pip" /root/.cache/pip /var/cache/apt/archives; do
        [ -e "$d" ] && out+=("$(du -sm "$d" | cut -f1) MB ${d#"$home"/}")
    done
    (IFS=,; echo "${out[*]}")
}
run_step() {  # name, command (run as the user, in the clone)
    step_name=$1
    local before started
    before=$(disk_mb) started=$(date +%s)
    echo "[fresh] == $step_name: $2"
    runuser -u "$user" -- bash -lc "cd $repo && $2"
    echo "[fresh] == $step_name: $(( $(date +%s) - started )) s, disk +$(( $(disk_mb) - before )) MB (container $(disk_mb) MB); $(sizes)"
}

# The machine: a TLS-intercepting proxy's CA in the system store (as its users' machines have it),
# an ordinary user made by adduser (home 0700) who may sudo, and the checkout cloned into the home.
if [ -s /fresh/proxy-ca.crt ]; then
    cp /fresh/proxy-ca.crt /usr/local/share/ca-certificates/proxy-ca.crt
    update-ca-certificates >/dev/null 2>&1
fi
adduser --disabled-password --gecos '' "$user" >/dev/null
echo "$user ALL=(ALL) NOPASSWD: ALL" > /etc/sudoers.d/$user
echo "[fresh] $(. /etc/os-release && echo "$PRETTY_NAME"); home $(stat -c %a "$home"); python3: $(command -v python3 || echo none);" \
     "PostgreSQL: $(ls /usr/lib/postgresql 2>/dev/null || echo none); disk $(disk_mb) MB"
runuser -u "$user" -- git clone -q -c advice.detachedHead=false /fresh/pg_imgembed.bundle "$repo"

# The README's two commands, as written.
run_step demo "sudo make demo"
run_step test "sudo make test"

step_name=ownership
left=$(find "$repo" ! -user "$user" -printf '%u %p\n' | head -20)
[ -z "$left" ] || { echo "[fresh] not the user's, in the checkout:"; echo "$left"; false; }
echo "[fresh] == ownership: everything in the checkout belongs to $user"

# "Using it from Python": its bash set-up block, each Python block, its CLI block, in one shell.
step_name=readme-extract
runuser -u "$user" -- python3 - "$repo/README.md" "$home/readme-examples.sh" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
start = text.index("\n## Using it from Python\n")
section = text[start:text.index("\n## ", start + 1)]
blocks = re.findall(r"```(bash|python)\n(.*?)```", section, flags=re.DOTALL)
with open(sys.argv[2], "w") as out:
    for language, body in blocks:
        if language == "bash":
            out.write(body)
        else:
            out.write(f"python <<'PYTHON_BLOCK'\n{body}PYTHON_BLOCK\n")
PY
run_step readme "bash -euxo pipefail $home/readme-examples.sh"
echo "[fresh] all steps passed"
