#!/usr/bin/env bash
# Build a stand-in for OpenEnv's base image without any container registry.
#
# For air-gapped machines and machines behind a TLS-intercepting proxy: a
# minimal Debian root file system is bootstrapped from the apt mirror this host
# already uses, given Python 3 (+ venv), curl, CA certificates (with the host's
# extra ones from /usr/local/share/ca-certificates/) and uv from its PyPI wheel,
# then imported and tagged with the name server/Dockerfile uses by default, so
#   docker build -t rooms-env:latest -f server/Dockerfile .
# works unchanged. Run as root on a Debian or Ubuntu host with debootstrap and
# a Docker engine. Usage: scripts/local-base-image.sh [TAG]
set -euo pipefail

tag="${1:-ghcr.io/huggingface/openenv-base:latest}"
suite="${SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}"
mirror="${MIRROR:-$(apt-get indextargets --format '$(REPO_URI)' 2>/dev/null | grep -v security | head -n 1)}"
mirror="${mirror:-http://deb.debian.org/debian/}"

for tool in debootstrap docker python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool is required (apt-get install debootstrap docker.io python3)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "error: run as root (debootstrap needs it)" >&2; exit 1; }
python3 -m pip --version >/dev/null 2>&1 || { echo "error: python3 needs pip to fetch the uv wheel (apt-get install python3-pip)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

echo "--- bootstrapping Debian $suite from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,curl,ca-certificates \
    "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

echo "--- adding this host's extra CA certificates"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
fi
chroot "$rootfs" update-ca-certificates >/dev/null 2>&1

echo "--- installing uv from its PyPI wheel"
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$work/wheel" uv
python3 - "$work/wheel" "$rootfs/usr/local/bin" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("uv-*.whl"))
target = pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.endswith(("/scripts/uv", "/scripts/uvx")):
            path = target / pathlib.Path(name).name
            path.write_bytes(archive.read(name))
            path.chmod(0o755)
PY
"$rootfs/usr/local/bin/uv" --version

echo "--- slimming and importing as $tag"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'WORKDIR /app' \
    --change 'CMD ["/bin/bash"]' \
    - "$tag"
docker image ls "$tag"
