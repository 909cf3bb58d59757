"""A real streaming replica of an embedded PostgreSQL, for tests of replica reads.

`pg_basebackup -R` from the same wheel's bin directory copies the primary and writes
the standby settings; the copy runs as the wheel's unprivileged user (as the primary
does), listening only on a Unix socket inside its own data directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from statebus.embedded import bin_dir

PG_USER = "pgserver"  # who the wheel runs PostgreSQL as when started by root


class Replica:
    def __init__(self, primary_dsn: str, directory: Path) -> None:
        self.primary_dsn = primary_dsn
        self.pgdata = directory.resolve()
        self._user = PG_USER if os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres:@/postgres?host={self.pgdata}"

    def _run(self, *argv: str) -> None:
        subprocess.run(argv, check=True, user=self._user, capture_output=True, timeout=120)

    def start(self) -> Replica:
        socket_dir = parse_qs(urlsplit(self.primary_dsn).query)["host"][0]
        self.pgdata.mkdir(mode=0o700, parents=True)
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        binaries = bin_dir()
        self._run(
            str(binaries / "pg_basebackup"),
            f"--host={socket_dir}",
            "--username=postgres",
            f"--pgdata={self.pgdata}",
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
        )
        # The primary keeps its socket (and the wheel its bookkeeping) in its data
        # directory, so the copy holds the primary's socket lock file: not ours.
        for leftover in (".s.PGSQL.5432.lock", ".handle_pids.json"):
            (self.pgdata / leftover).unlink(missing_ok=True)
        with open(self.pgdata / "postgresql.auto.conf", "a") as conf:
            conf.write(f"\nunix_socket_directories = '{self.pgdata}'\nlisten_addresses = ''\n")
        self._run(
            str(binaries / "pg_ctl"),
            "--pgdata",
            str(self.pgdata),
            "--log",
            str(self.pgdata / "replica.log"),
            "--wait",
            "start",
        )
        return self

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._run(str(bin_dir() / "pg_ctl"), "--pgdata", str(self.pgdata), "-m", "fast", "stop")
        shutil.rmtree(self.pgdata, ignore_errors=True)
