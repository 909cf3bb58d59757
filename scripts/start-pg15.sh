#!/usr/bin/env bash
# Starts Debian's PostgreSQL 15 on 127.0.0.1:${PG15_PORT:-55432} in a scratch directory
# (as user postgres: initdb refuses root) and prints its DSN. Used by .ci/run to run the
# database tests on 15 as well as on the embedded 18.
set -euo pipefail
bin=/usr/lib/postgresql/15/bin
port=${PG15_PORT:-55432}
dir=${PG15_DIR:-/tmp/statebus-pg15}
if [ ! -x "$bin/postgres" ]; then
    echo "PostgreSQL 15 is not installed (apt-get install postgresql-15)" >&2
    exit 1
fi
rm -rf "$dir" && mkdir -p "$dir" && chown postgres "$dir"
runuser -u postgres -- "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
echo "postgresql://postgres@127.0.0.1:$port/postgres"
