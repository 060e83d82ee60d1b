#!/usr/bin/env bash
# install-deps.sh - installs, from Debian's packages, whatever keepmq needs and
# the machine lacks. Idempotent: with everything present it does nothing and
# does not touch the network.
#   scripts/install-deps.sh build   compiler, CMake and the C libraries
#   scripts/install-deps.sh test    the above plus test and benchmark tools
set -euo pipefail

what=${1:-build}
BUILD_PKGS="build-essential cmake pkg-config libuv1-dev libssl-dev libjansson-dev libsqlite3-dev
            libcmocka-dev sqlite3 libhiredis-dev libmariadb-dev libpq-dev"
TEST_PKGS="clang libclang-rt-14-dev python3 python3-pytest python3-pytest-timeout
           python3-paho-mqtt mosquitto mosquitto-clients procps iproute2
           redis-server redis-tools python3-redis
           mariadb-server mariadb-client postgresql-15 postgresql-client-15
           python3-pymysql python3-psycopg2"

pkgs=$BUILD_PKGS
[ "$what" = test ] && pkgs="$pkgs $TEST_PKGS"

missing=()
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or install them with apt-get) and try again" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# keep package scripts from starting services (mosquitto, redis, mariadb,
# postgresql) on default ports: their postinsts start them only through
# invoke-rc.d / deb-systemd-invoke, which obey policy-rc.d (exit 101 = denied)
added_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; added_policy=1
fi
trap '[ $added_policy = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/keepmq-apt.log 2>&1 \
  || { tail -30 /tmp/keepmq-apt.log >&2; echo "install-deps: apt-get install failed" >&2; exit 1; }
