#!/usr/bin/env bash
# Redis for the tests: Debian's redis-server (the process fallback runs it directly), and a
# local Docker image built from that binary and its shared libraries, because no image can be
# pulled on these machines. Idempotent: does nothing when both are already there.
#
# LOCKCHECK_REDIS_IMAGE names the image (default lockcheck/redis:7). Point it at an image you
# pulled yourself (e.g. redis:7) and this script leaves it alone if it exists.
set -euo pipefail
source "$(dirname "$0")/../env.sh"
image="${LOCKCHECK_REDIS_IMAGE:-lockcheck/redis:7}"

if ! command -v redis-server >/dev/null 2>&1; then
  echo "setup/redis: installing redis-server (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server >/dev/null
fi

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "setup/redis: no Docker engine answers; tests will run redis-server as processes"
  exit 0
fi
if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi

echo "setup/redis: building $image from $(command -v redis-server)"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
server="$(readlink -f "$(command -v redis-server)")"
mkdir -p "$root/usr/bin" "$root/data" "$root/tmp"
cp "$server" "$root/usr/bin/redis-server"
# The binary is dynamically linked: carry every library ldd names, and the loader, at the
# same paths. Follow symlinks (cp -L) so the image needs no link targets.
ldd "$server" | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# `docker import` from a tarball: no base image to pull. The container runs the server in
# the foreground with no persistence (tests that want AOF pass --appendonly yes).
tar -C "$root" -cf "$root.tar" .
docker import \
  -c 'ENTRYPOINT ["/usr/bin/redis-server"]' \
  -c 'CMD ["--protected-mode", "no", "--save", "", "--appendonly", "no"]' \
  -c 'WORKDIR /data' \
  -c 'EXPOSE 6379' \
  "$root.tar" "$image" >/dev/null
rm -f "$root.tar"
docker run --rm "$image" --version
