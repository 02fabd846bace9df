#!/usr/bin/env bash
# ZooKeeper for the drivers of ZooKeeper lock recipes (kazoo, tooz's zookeeper:// driver):
# Debian's zookeeperd (3.8 on bookworm; apt pulls in a JRE) and slf4j's simple binding, which
# puts the server's log on stderr. The tests run the server themselves, as a process on a free
# port in a scratch directory of their own (see support/src/zookeeper.rs); Debian's package may
# start a system server on 2181, which they leave alone. Idempotent: does nothing when the jars
# and java are there.
#
# LOCKCHECK_ZOOKEEPER_CLASSPATH replaces the class path the tests run (default
# /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar).
set -euo pipefail
source "$(dirname "$0")/../env.sh"

if [ ! -f /usr/share/java/zookeeper.jar ] || [ ! -f /usr/share/java/slf4j-simple.jar ] \
  || ! command -v java >/dev/null 2>&1; then
  echo "setup/zookeeper: installing zookeeperd (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq zookeeperd libslf4j-java >/dev/null
fi
