"""A PostgreSQL cluster of the stack's own (initdb/pg_ctl from Debian), TimescaleDB when present.

PostgreSQL refuses to run as root, so when ``up`` runs as root the cluster
runs as ``settings.pg_os_user`` (Debian's ``postgres``).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import MissingToolError, ServiceFailedError
from ._service import Health, Service

if TYPE_CHECKING:
    from sealstream.settings import Settings
from ._tools import apt_install, run_checked

__all__ = ["PostgreSQL", "postgres_bin_dir"]

log = logging.getLogger("sealstream.stack")


def postgres_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL server bin directory, or one from PATH."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


class PostgreSQL(Service):
    name = "postgres"
    start_timeout = 60.0

    def __init__(self, settings: Settings, home: Path) -> None:
        super().__init__(settings, home)
        self._bin: Path | None = None

    # -- facts ----------------------------------------------------------------------
    @property
    def bin(self) -> Path:
        if self._bin is None:
            self._bin = postgres_bin_dir()
            if self._bin is None:
                raise MissingToolError("PostgreSQL server programs are not installed; run `sealstream stack up` "
                                       "as root so it installs them, or `apt-get install postgresql`.",
                                       service=self.name)
        return self._bin

    def ports(self) -> list[tuple[int, str]]:
        return [(self.settings.pg_port, "SEALSTREAM_PG_PORT")]

    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.pg_port}"

    def version(self) -> str:
        try:
            with self._connect("postgres") as conn:
                return str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]
        except Exception:  # noqa: BLE001 - not answering: the data directory's or the binary's version
            version_file = self.data_dir / "PG_VERSION"
            if version_file.exists():
                return version_file.read_text().strip()
            found = postgres_bin_dir()
            return found.parent.name if found else "not installed"

    def running_pid(self) -> int | None:
        # postmaster.pid is PostgreSQL's own pid file; our copy in run/ mirrors it.
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        return pid if b"postgres" in cmdline else None

    # -- who runs it ----------------------------------------------------------------
    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", self.settings.pg_os_user, "--", *argv]

    def _owner_ids(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(self.settings.pg_os_user)
        except KeyError:
            raise MissingToolError(
                f"PostgreSQL cannot run as root and the OS user '{self.settings.pg_os_user}' does not exist; "
                "install the Debian postgresql package (it creates the user) or set SEALSTREAM_PG_OS_USER.",
                service=self.name) from None
        return entry.pw_uid, entry.pw_gid

    def _make_reachable(self, path: Path) -> None:
        """Let the cluster's OS user traverse to ``path`` (search permission only)."""
        if os.geteuid() != 0:
            return
        for parent in reversed(path.parents):
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                log.warning("granting others search (x) permission on %s so PostgreSQL's OS user can reach "
                            "its data directory", parent, extra={"service": self.name})
                os.chmod(parent, mode | stat.S_IXOTH)

    # -- install and run ------------------------------------------------------------
    def install(self) -> None:
        if postgres_bin_dir() is None:
            apt_install(["postgresql"], service=self.name, auto_install=self.settings.auto_install)
            if postgres_bin_dir() is None:
                raise MissingToolError("PostgreSQL was installed but pg_ctl is still missing; "
                                       "check the Debian postgresql package.", service=self.name)
        self._owner_ids()

    def _timescaledb_library(self) -> bool:
        pg_config = self.bin / "pg_config"
        try:
            libdir = subprocess.run([str(pg_config), "--pkglibdir"], capture_output=True, text=True,
                                    check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            libdir = f"/usr/lib/postgresql/{self.bin.parent.name}/lib"
        return any(Path(libdir).glob("timescaledb*.so"))

    def _conf(self) -> str:
        s = self.settings
        lines = [
            "# generated by `sealstream stack up`; edit settings, not this file",
            f"port = {s.pg_port}",
            f"listen_addresses = '{s.host}'",
            "unix_socket_directories = ''",
            "max_connections = 200",
            "shared_buffers = 256MB",
            "wal_level = replica",
            "logging_collector = off",
        ]
        if self._timescaledb_library():
            lines += ["shared_preload_libraries = 'timescaledb'", "timescaledb.telemetry_level = off"]
        return "\n".join(lines) + "\n"

    def _init(self) -> None:
        s = self.settings
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        ids = self._owner_ids()
        pwfile = self.data_dir.parent / ".pg-password"
        pwfile.write_text(s.pg_password + "\n")
        os.chmod(pwfile, 0o600)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if ids:
            os.chown(pwfile, *ids)
            os.chown(self.data_dir, *ids)
            self._make_reachable(self.data_dir)
        try:
            run_checked(
                self._as_owner([str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", s.pg_user,
                                f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=peer",
                                "-E", "UTF8", "--locale=C.UTF-8"]),
                service=self.name,
                what="initdb of the stack's PostgreSQL cluster",
                fix=f"remove {self.data_dir} and run `sealstream stack up` again",
                log_path=self.log_path,
                timeout=300,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\ninclude_if_exists = 'sealstream.conf'\n")

    def launch(self) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            self._init()
        conf = self.data_dir / "sealstream.conf"
        self.write_if_changed(conf, self._conf())
        ids = self._owner_ids()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        if ids:
            os.chown(conf, *ids)
            os.chown(self.log_path, *ids)
            self._make_reachable(self.data_dir)
        proc = subprocess.run(
            self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path),
                            "-w", "-t", str(int(self.start_timeout)), "start"]),
            capture_output=True, text=True)
        if proc.returncode != 0:
            raise ServiceFailedError(
                f"PostgreSQL did not start ({(proc.stderr or proc.stdout).strip().splitlines()[-1:]}); "
                f"see `sealstream stack logs postgres` for why.", service=self.name)

    def stop(self) -> bool:
        if self.running_pid() is None:
            return False
        subprocess.run(self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
                                       "-w", "-t", "60", "stop"]), capture_output=True)
        return True

    def _connect(self, dbname: str | None = None):
        import psycopg

        s = self.settings
        return psycopg.connect(s.postgres_dsn, dbname=dbname or s.pg_database, connect_timeout=3,
                               autocommit=True)

    def flavour(self) -> str:
        """``timescaledb <version>`` or ``plain PostgreSQL`` (what the migrations will use)."""
        with self._connect("postgres") as conn:
            avail = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
            has_db = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (self.settings.pg_database,)).fetchone()
        if avail and has_db:
            with self._connect() as conn:
                row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
            if row:
                return f"timescaledb {row[0]}"
        return ("plain PostgreSQL (timescaledb available, not enabled)" if avail
                else "plain PostgreSQL (timescaledb not available)")

    def health(self) -> Health:
        try:
            return Health(True, self.flavour())
        except Exception as exc:  # noqa: BLE001 - a health check reports, it does not fail
            text = str(exc).strip()
            return Health(False, text.splitlines()[0] if text else type(exc).__name__)

    def provision(self) -> None:
        s = self.settings
        with self._connect("postgres") as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (s.pg_database,)).fetchone()
            if not exists:
                from psycopg import sql

                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(s.pg_database)))
        with self._connect() as conn:
            avail = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
            if avail and self._timescaledb_library():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
