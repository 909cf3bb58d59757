"""The built wheel, installed into a fresh virtualenv, is the whole of statebus.

The wheel is built from this checkout with `pip wheel`, and installed (dependencies
from the package index) into a new venv without system site-packages, so neither the
checkout nor the development venv's editable install can stand in for it. Everything
then runs from a directory outside the checkout with PYTHONPATH removed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from statebus.embedded import EmbeddedPostgres
from statebus.testing.server import free_port
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Installed:
    wheel: Path
    bin: Path  # the fresh venv's bin/
    outside: Path  # a working directory outside the checkout


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would point Python at the checkout."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in dropped and not k.startswith(("STATEBUS_", "STRIPE_"))
    }
    return env | extra


def run(*argv: str | Path, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def checked(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("packaging")
    dist = base / "dist"
    checked(
        run(
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ROOT,
            "--no-deps",
            "-w",
            dist,
            cwd=base,
            timeout=180,
        )
    )
    (wheel,) = dist.glob("statebus-*.whl")
    checked(run(sys.executable, "-m", "venv", base / "venv", cwd=base, timeout=120))
    venv_bin = base / "venv" / "bin"
    checked(run(venv_bin / "python", "-m", "pip", "install", "-q", wheel, cwd=base, timeout=300))
    yield Installed(wheel=wheel, bin=venv_bin, outside=base)
    shutil.rmtree(base / "venv", ignore_errors=True)  # ~200 MB; pytest keeps its tmp dirs


def test_the_wheel_holds_the_statebus_package_and_its_sql(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"statebus"}
    shipped = set(names)
    for sql in (ROOT / "sql").rglob("*.sql"):
        assert f"statebus/sql/{sql.relative_to(ROOT / 'sql')}" in shipped
    for needed in ("statebus/py.typed", "statebus/static/statebus.js", "statebus/__main__.py"):
        assert needed in shipped


def test_the_installed_package_is_statebus_and_not_server(installed: Installed) -> None:
    python = installed.bin / "python"
    where = checked(
        run(
            python,
            "-c",
            "import statebus; print(statebus.__file__); print(statebus.__version__)",
            cwd=installed.outside,
            timeout=60,
        )
    ).split()
    assert Path(where[0]).is_relative_to(installed.bin.parent)  # the venv's, not the checkout's
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert where[1] == project["version"]

    missing = run(python, "-c", "import server", cwd=installed.outside, timeout=60)
    assert missing.returncode != 0 and "No module named 'server'" in missing.stderr

    usage = checked(run(python, "-m", "statebus", "--help", cwd=installed.outside, timeout=60))
    assert "serve" in usage and "migrate" in usage


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_the_installed_wheel_serves_the_demo(installed: Installed, home: Path) -> None:
    port = free_port()
    log_path = installed.outside / "serve.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            str(installed.bin / "statebus"),
            "serve",
            "--demo",
            "--port",
            str(port),
            cwd=installed.outside,
            env=clean_env(STATEBUS_HOME=str(home)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            async def ready() -> bool:
                assert proc.returncode is None, log_path.read_text()
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(ready, timeout=90, what="/readyz 200 from the installed wheel")
            page = await http.get("/")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            static = ROOT / "server" / "statebus" / "static"
            assert page.text == (static / "index.html").read_text()  # from the wheel's copy
            script = await http.get("/statebus.js")
            assert script.status_code == 200 and "javascript" in script.headers["content-type"]
            assert script.text == (static / "statebus.js").read_text()
        postmaster = EmbeddedPostgres(home).postmaster_pid()
        assert postmaster is not None

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, log_path.read_text()
        await wait_for(
            lambda: not alive(postmaster), timeout=30, what="embedded PostgreSQL stopped"
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
