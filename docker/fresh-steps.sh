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
# What pip downloaded, from its log (pip keeps no cache of what the proxy serves here), and apt.
pip_log=/var/log/pip-fresh/pip.log
downloaded_mb() {
    python3 - "$pip_log" 2>/dev/null <<'PY' || echo 0
import re, sys
unit = {"kB": 1e-3, "MB": 1, "GB": 1e3}
text = open(sys.argv[1]).read() if __import__("os").path.exists(sys.argv[1]) else ""
print(round(sum(float(n) * unit[u] for n, u in re.findall(r"Downloading \S+ \((\d+(?:\.\d+)?) (kB|MB|GB)\)", text))))
PY
}
apt_mb() { du -sm /var/cache/apt/archives | cut -f1; }
sizes() {  # what is where: the checkout, its venvs, the runtime, apt's downloads
    local d out=()
    for d in "$repo" "$repo/.venv" "$repo/.demo/venv" "$repo/.demo/export-venv" "$home/venvs" /usr/local/lib/pg_imgembed /var/cache/apt/archives; do
        [ -e "$d" ] && out+=("$(du -sm "$d" | cut -f1) MB ${d#"$home"/}")
    done
    (IFS=,; echo "${out[*]}")
}
run_step() {  # name, command (run as the user, in the clone)
    step_name=$1
    local before started pip_before apt_before
    before=$(disk_mb) started=$(date +%s) pip_before=$(downloaded_mb) apt_before=$(apt_mb)
    echo "[fresh] == $step_name: $2"
    runuser -u "$user" -- bash -lc "cd $repo && $2"
    echo "[fresh] == $step_name: $(( $(date +%s) - started )) s; disk $(printf %+d $(( $(disk_mb) - before ))) MB" \
         "(container $(disk_mb) MB); downloaded: pip $(( $(downloaded_mb) - pip_before )) MB, apt $(( $(apt_mb) - apt_before )) MB"
    echo "[fresh]    sizes: $(sizes)"
}

# The machine: a TLS-intercepting proxy's CA in the system store (as its users' machines have it),
# an ordinary user made by adduser (home 0700) who may sudo, and the checkout cloned into the home.
if [ -s /fresh/proxy-ca.crt ]; then
    cp /fresh/proxy-ca.crt /usr/local/share/ca-certificates/proxy-ca.crt
    update-ca-certificates >/dev/null 2>&1
fi
adduser --disabled-password --gecos '' "$user" >/dev/null
# pip logs every download (root's and the user's), for the numbers; it changes nothing else.
install -d -m 1777 "$(dirname "$pip_log")" && install -m 666 /dev/null "$pip_log"
printf '[global]\nlog = %s\n' "$pip_log" > /etc/pip.conf
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

# A second demo keeps the user's tables; make clean (as the user) stops the cluster and removes it.
psql_demo="psql -X -v ON_ERROR_STOP=1 -q -h $repo/.demo/cluster/sock -U postgres -d imgembed_demo"
run_step demo-again "$psql_demo -c 'CREATE TABLE mine (x int); INSERT INTO mine VALUES (1)' && sudo make demo >/dev/null &&
    test \"\$($psql_demo -tA -c 'SELECT count(*) FROM mine')\" = 1"
# (no procps in minbase: the cluster's server is looked for in /proc; [.] keeps grep from finding itself)
run_step clean "make clean && test ! -e .demo && ! grep -qs 'pg_imgembed/[.]demo/cluster' /proc/[0-9]*/cmdline"
echo "[fresh] all steps passed"
