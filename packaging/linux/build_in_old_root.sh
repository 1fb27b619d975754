#!/bin/sh
# Builds the Linux bundle inside an older Debian root, so that it runs on that Debian's glibc and newer
# (bullseye: glibc 2.31, Debian 11, RHEL 9's 2.34, Ubuntu 20.04's 2.31). Needs root (debootstrap,
# chroot, mounts) and Debian's package mirror and PyPI. Run from the repository root:
#   sudo sh packaging/linux/build_in_old_root.sh [ROOT_DIR]     (default build/old-root)
# What it does: debootstrap a minimal bullseye into ROOT_DIR (once); install a compiler and Python's
# build dependencies there; build Python 3.11 from Debian's source (bullseye has 3.9, chatapp needs
# 3.10+) into /opt/python3.11 (shared libpython, for PyInstaller); then run packaging/build.py inside
# the root on this tree (mounted read-only at /src), writing to ROOT_DIR/out/dist. The first run
# compiles Python and llama.cpp: tens of minutes on 2 cores.
set -eu

die() { echo "build_in_old_root.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts)"
[ -f packaging/build.py ] || die "run it from the repository root"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"

root="$(realpath -m "${1:-build/old-root}")"
suite=bullseye
mirror=http://deb.debian.org/debian
python_source="$mirror/pool/main/p/python3.11/python3.11_3.11.2.orig.tar.gz"

if [ ! -x "$root/usr/bin/apt-get" ]; then
    debootstrap --variant=minbase "$suite" "$root" "$mirror"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
# this system's CA certificates, for pip inside the root (a proxy's own CA included, where there is one)
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/host-ca-certificates.crt"

mkdir -p "$root/src" "$root/out"
cleanup() {
    umount "$root/src" 2>/dev/null || true
    umount "$root/proc" 2>/dev/null || true
}
trap cleanup EXIT
mount -t proc proc "$root/proc"
mount --bind -o ro "$(pwd)" "$root/src"
mount -o remount,bind,ro "$root/src"

in_root() {
    chroot "$root" /usr/bin/env -i HOME=/root PATH=/opt/python3.11/bin:/usr/bin:/bin LANG=C.UTF-8 \
        PIP_CERT=/etc/host-ca-certificates.crt SSL_CERT_FILE=/etc/host-ca-certificates.crt "$@"
}

if [ ! -x "$root/opt/python3.11/bin/python3.11" ]; then
    in_root apt-get update -qq
    in_root apt-get install -y -qq --no-install-recommends build-essential ca-certificates wget xz-utils \
        libssl-dev zlib1g-dev libffi-dev libsqlite3-dev libbz2-dev liblzma-dev libreadline-dev \
        libncursesw5-dev uuid-dev binutils
    in_root sh -c "cd /tmp && wget -q '$python_source' -O python.tar.gz && rm -rf Python-3.11.2 &&
        tar xf python.tar.gz && cd Python-3.11.2 &&
        ./configure --quiet --prefix=/opt/python3.11 --enable-shared LDFLAGS=-Wl,-rpath,/opt/python3.11/lib &&
        make -j\"\$(nproc)\" >/dev/null && make install >/dev/null" || die "building Python 3.11 in $root failed"
fi

in_root /opt/python3.11/bin/python3.11 /src/packaging/build.py --python /opt/python3.11/bin/python3.11 \
    --venv /out/bundle-venv --work /out/build --dist /out/dist
echo "the bundle built in $suite: $root/out/dist"
