#!/usr/bin/env bash
# etcd for the tests: Debian's etcd-server (3.4; the process fallback runs it directly), a
# local Docker image built from that binary and its shared libraries (no image can be pulled on
# these machines), and protoc, which the etcd client crate's build script needs to compile
# etcd's protocol definitions. Idempotent: does nothing when all three are already there.
#
# LOCKCHECK_ETCD_IMAGE names the image (default lockcheck/etcd:3.4). Point it at an image you
# pulled yourself and this script leaves it alone if it exists.
set -euo pipefail
source "$(dirname "$0")/../env.sh"
image="${LOCKCHECK_ETCD_IMAGE:-lockcheck/etcd:3.4}"

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup/etcd: installing ${missing[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's package starts a system etcd on 2379; the tests start their own on free ports.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  systemctl stop etcd || true
fi

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "setup/etcd: no Docker engine answers; tests will run etcd as processes"
  exit 0
fi
if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi

echo "setup/etcd: building $image from $(command -v etcd)"
root="$(mktemp -d)"
trap 'rm -rf "$root" "$root.tar"' EXIT
server="$(readlink -f "$(command -v etcd)")"
mkdir -p "$root/usr/bin" "$root/data" "$root/tmp" "$root/dev/shm"
cp "$server" "$root/usr/bin/etcd"
# Debian builds etcd as a dynamically linked binary: carry every library ldd names, and the
# loader, at the same paths (cp -L: no link targets needed).
ldd "$server" | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
tar -C "$root" -cf "$root.tar" .
docker import \
  -c 'ENTRYPOINT ["/usr/bin/etcd"]' \
  -c 'WORKDIR /data' \
  -c 'EXPOSE 2379' \
  "$root.tar" "$image" >/dev/null
docker run --rm "$image" --version
