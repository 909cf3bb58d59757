#!/usr/bin/env bash
set -euo pipefail
dir=${PG15_DIR:-/tmp/statebus-pg15}
[ -d "$dir/data" ] && runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$dir/data" -m fast -w stop >/dev/null || true
