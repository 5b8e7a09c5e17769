#!/bin/sh
# Installs dso on hosts without dpkg: the binaries (dso, dso-runc, dso-init side by side),
# the agent's systemd unit, man pages, shell completions, the schema, and /etc/dso (0700).
# Ships no secret material: run `dso init` afterwards for a key file and a local store.
#
#   packaging/install.sh [--from DIR] [--prefix /usr/local] [--destdir STAGING]
#   packaging/install.sh --uninstall [--prefix /usr/local]
#
#   --from DIR     where the built binaries are (default: target/release)
#   --prefix DIR   installation prefix (default: /usr/local)
#   --destdir DIR  stage into DIR instead of / (packagers; no root needed)
#
# Then: dso install (register the runtime with dockerd), dso doctor.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
from=$here/target/release
prefix=/usr/local
destdir=
uninstall=false

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --from) from=${2:?--from needs a directory}; shift 2 ;;
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
        --uninstall) uninstall=true; shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

bindir=$destdir$prefix/bin
sharedir=$destdir$prefix/share
unitdir=$destdir/etc/systemd/system

if [ "$uninstall" = true ]; then
    rm -f "$bindir/dso" "$bindir/dso-runc" "$bindir/dso-init" "$unitdir/dso-agent.service"
    rm -f "$sharedir"/man/man1/dso.1 "$sharedir"/man/man1/dso-*.1
    rm -f "$sharedir/bash-completion/completions/dso" "$sharedir/zsh/site-functions/_dso" \
        "$sharedir/fish/vendor_completions.d/dso.fish"
    rm -rf "$sharedir/dso"
    echo "dso removed from $prefix; /etc/dso and /var/lib/dso were left (your keys and store);"
    echo "run \`dso uninstall\` before this if dockerd still lists the runtime"
    exit 0
fi

if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (or stage with --destdir DIR)"
fi
for b in dso dso-runc dso-init; do
    [ -x "$from/$b" ] || die "$from/$b is missing: build first (cargo build --release) or pass --from DIR"
done

install -d -m 0755 "$bindir" "$sharedir/dso" "$sharedir/man/man1" \
    "$sharedir/bash-completion/completions" "$sharedir/zsh/site-functions" \
    "$sharedir/fish/vendor_completions.d" "$unitdir"
for b in dso dso-runc dso-init; do
    install -m 0755 "$from/$b" "$bindir/$b"
done
install -m 0644 "$here/runtime-config/dso.schema.json" "$sharedir/dso/dso.schema.json"
sed "s|/usr/bin/dso|$prefix/bin/dso|g" "$here/packaging/dso-agent.service" >"$unitdir/dso-agent.service"
chmod 0644 "$unitdir/dso-agent.service"
"$from/dso" man --dir "$sharedir/man/man1"
"$from/dso" completions bash >"$sharedir/bash-completion/completions/dso"
"$from/dso" completions zsh >"$sharedir/zsh/site-functions/_dso"
"$from/dso" completions fish >"$sharedir/fish/vendor_completions.d/dso.fish"
install -d -m 0700 "$destdir/etc/dso" "$destdir/var/lib/dso"

if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
echo "dso installed in $prefix/bin. Next: dso init; dso install; dso doctor"
