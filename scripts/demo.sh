#!/usr/bin/env bash
# The main job, end to end, on a throwaway dockerd: build dso, start a private dockerd with
# dso registered as a runtime, make a local encrypted store, store a secret, and read it from
# inside a container while `docker inspect` shows only the reference.
#
# Everything lives under one `mktemp -d` directory and is removed at the end, also on failure
# or Ctrl-C. The system's Docker (if any) is not touched. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD

step=0
say() {
    step=$((step + 1))
    printf '\n\033[1m[%d] %s\033[0m\n' "$step" "$*"
}
# Prints a command the way one would type it (single-quoting words that need it), runs it.
show() {
    local out='$' a
    for a in "$@"; do
        if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
            out+=" $a"
        else
            out+=" '${a//\'/\'\\\'\'}'"
        fi
    done
    printf '%s\n' "$out"
    "$@"
}

if [[ $(id -u) -ne 0 ]]; then
    echo "demo.sh must run as root (it starts a private dockerd)" >&2
    exit 1
fi

say "Installing missing dependencies (runc, docker.io, busybox-static, ...)"
scripts/install-deps.sh

say "Building dso (release): dso-runc, dso, dso-init"
show cargo build --release
BIN=$REPO/target/release
for b in dso-runc dso dso-init; do
    [[ -x $BIN/$b ]] || {
        echo "missing $BIN/$b" >&2
        exit 1
    }
done

# A short path: unix socket paths are limited to 108 bytes.
T=$(mktemp -d /tmp/dso-demo.XXXXXX)
DOCKERD_PID=
CONTAINER=dso-demo-$$

cleanup() {
    local rc=$?
    set +e
    trap - EXIT
    trap "" INT TERM # finish cleaning up even if interrupted again
    printf '\n\033[1m[cleanup] stopping the private dockerd and removing %s\033[0m\n' "$T"
    if [[ -n $DOCKERD_PID ]] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        local ids
        ids=$(timeout 20 docker ps -aq 2>/dev/null)
        if [[ -n $ids ]]; then
            # shellcheck disable=SC2086 # one id per word
            timeout 30 docker rm -f $ids >/dev/null 2>&1
        fi
        kill -TERM "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 1 300); do
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$DOCKERD_PID" 2>/dev/null
        wait "$DOCKERD_PID" 2>/dev/null
    fi
    # Whatever still runs from the temp dir (dockerd's containerd, shims) goes too.
    local p cmd
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [[ $p == "$$" || $p == "$BASHPID" ]] && continue
        cmd=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) || continue
        if [[ $cmd == *"$T/"* ]]; then
            kill -TERM "$p" 2>/dev/null
            sleep 1
            kill -KILL "$p" 2>/dev/null
        fi
    done
    # Unmount what is left under the temp dir, deepest first, then remove it.
    awk -v d="$T/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null; done
    rm -rf "$T"
    if ((rc != 0)); then
        printf '\ndemo FAILED (exit %d)\n' "$rc" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export DOCKER_HOST=unix://$T/docker.sock
export DOCKER_CONFIG=$T/docker-cli
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH

say "Starting a private dockerd in $T with runtime 'dso' = $BIN/dso-runc"
# Docker 20.10 would otherwise create /etc/docker/key.json; later versions reject the key.
key_path=
if [[ $(dockerd --version | awk '{ split($3, v, "."); print v[1] }') -le 20 ]]; then
    key_path="\"deprecated-key-path\": \"$T/key.json\","
fi
cat >"$T/daemon.json" <<EOF
{
  "runtimes": {
    "dso": { "path": "$BIN/dso-runc", "runtimeArgs": ["--dso-config=$T/dso.yaml"] }
  },
  $key_path
  "shutdown-timeout": 2
}
EOF
cat "$T/daemon.json"
dockerd --data-root "$T/data" --exec-root "$T/exec" --pidfile "$T/dockerd.pid" \
    -H "unix://$T/docker.sock" --bridge none --iptables=false --ip6tables=false \
    --config-file "$T/daemon.json" >"$T/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for i in $(seq 1 300); do
    if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
        break
    fi
    if ! kill -0 "$DOCKERD_PID" 2>/dev/null || ((i == 300)); then
        echo "dockerd did not come up; last lines of its log:" >&2
        tail -n 40 "$T/dockerd.log" >&2
        exit 1
    fi
    sleep 0.2
done
echo "dockerd $(docker version --format '{{.Server.Version}}') answers on $DOCKER_HOST"

say "Importing a busybox image (no registry needed): dso-test/busybox"
R=$T/rootfs
mkdir -p "$R"/{bin,etc,tmp,run,proc,sys,dev,var,root}
chmod 1777 "$R/tmp"
cp /bin/busybox "$R/bin/busybox"
for applet in $(/bin/busybox --list); do
    [[ -e $R/bin/$applet ]] || ln -s busybox "$R/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\napp:x:1000:\n' >"$R/etc/group"
tar -C "$R" --numeric-owner -c . | docker import - dso-test/busybox:latest
rm -rf "$R"

say "Creating a local encrypted store with dso init"
show "$BIN/dso" --config "$T/dso.yaml" init --store "$T/store.vault" --key-file "$T/master.key"

say "Declaring the secret db_password in dso.yaml, granted to containers named dso-demo-*"
cat >"$T/dso.yaml" <<EOF
providers:
  local: { type: local, path: "$T/store.vault", key_file: "$T/master.key" }
secrets:
  db_password:
    allow:
      - docker: { name: "dso-demo-*" }
policy: { default: deny }
audit: { path: "$T/audit.log" }
runtime: { state_dir: "$T/dso-state" }
EOF
cat "$T/dso.yaml"
show "$BIN/dso" --config "$T/dso.yaml" config validate

say "Storing the secret from stdin (never in argv, never on disk in plaintext)"
printf '$ %s\n' "printf 's3cr3t-demo' | dso secret set db_password"
printf 's3cr3t-demo' | "$BIN/dso" --config "$T/dso.yaml" secret set db_password
show "$BIN/dso" --config "$T/dso.yaml" secret ls

say "Reading it from inside a container (file reference)"
# shellcheck disable=SC2016 # expanded by the shell inside the container
show docker run --rm --name "$CONTAINER-reader" --runtime dso --network none \
    -e DB_PASSWORD_FILE=dsofile://db_password dso-test/busybox \
    sh -c 'echo "DB_PASSWORD_FILE=$DB_PASSWORD_FILE"; printf "content: "; cat "$DB_PASSWORD_FILE"; echo'

say "A container the policy does not grant the secret to is refused before it exists"
printf '$ %s\n' "docker run --rm --name intruder --runtime dso -e X_FILE=dsofile://db_password dso-test/busybox true"
if docker run --rm --name intruder --runtime dso --network none \
    -e X_FILE=dsofile://db_password dso-test/busybox true; then
    echo "FAIL: a container without a grant received the secret" >&2
    exit 1
fi

say "A detached container: the secret is in its tmpfs, docker inspect holds only the reference"
show docker run -d --name "$CONTAINER" --runtime dso --network none \
    -e DB_PASSWORD_FILE=dsofile://db_password dso-test/busybox sleep 300
show docker exec "$CONTAINER" ls -ln /run/secrets
show docker exec "$CONTAINER" grep ' /run/secrets ' /proc/mounts
printf '$ %s\n' "docker inspect --format '{{json .Config.Env}}' $CONTAINER | jq ."
docker inspect --format '{{json .Config.Env}}' "$CONTAINER" | jq .
if docker inspect "$CONTAINER" | grep -qF 's3cr3t-demo'; then
    echo "FAIL: the value is in docker inspect" >&2
    exit 1
fi
echo "docker inspect: no secret value, only dsofile://db_password"

say "Searching the host's filesystem for the value while the container runs"
printf '$ %s\n' "grep -rlF --devices=skip s3cr3t-demo $T /run /etc /var/lib"
found=$(grep -rlF --devices=skip -s 's3cr3t-demo' "$T" /run /etc /var/lib || true)
if [[ -n $found ]]; then
    echo "FAIL: the value is on the host's disk, in:" >&2
    echo "$found" >&2
    exit 1
fi
echo "not found: the value exists only in the container's tmpfs and in process memory"

show docker rm -f "$CONTAINER"
say "Demo complete"
