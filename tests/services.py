"""Real services and real processes for tests and drills that stop, kill or restart things.

Tests never stop the shared PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379): a test
that needs a service to go away starts its own instance with these helpers.

`RedisServer` -- a private redis-server on a free port; `stop()` / `start()` it at will
    (same port, so clients reconnect). Nothing is persisted: a stop loses its messages,
    as a crashed Redis would.

        with RedisServer() as redis_server:
            env = {"REDIS_URL": redis_server.url}
            ...
            redis_server.stop(); ...; redis_server.start()

`PostgresCluster` -- a throwaway PostgreSQL cluster (initdb + pg_ctl, run as the `postgres`
    OS user since tests run as root), on a free port, in a temporary directory removed
    afterwards. `create_database()` returns the URL of a new migrated database;
    `stop()` (immediate, like a crash) and `start()` it during a test.

        with PostgresCluster() as cluster:
            url = cluster.create_database()
            cluster.stop(); ...; cluster.start()

`OutboxProcess` -- an `outbox ...` command (or any argv) as a real OS process in its own
    process group, with its output in a log file: `start()`, `stop()` (SIGTERM, then
    SIGKILL), `kill()` (SIGKILL to the whole group), `output()` for failure messages.
    `outbox_env(...)` builds its environment (database, Redis, namespace, handler table,
    short lease/retry/sweep settings for tests).

`WORKER_READY` -- what each Dramatiq worker process prints once it consumes messages:
    `proc.wait_for_output(WORKER_READY, count=processes)` after starting `outbox worker`.

`start_for(stack, process)` -- `process` started, and killed when an ExitStack closes: for
    drills that check their end state themselves, where a graceful stop proves nothing.

`free_port()`, `wait_for_port()`, `wait_until()` -- the small waits all of the above need.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
WORKER_READY = "Worker process is ready for action."
TEST_NAMESPACE_PREFIX = "outbox-test-"  #: every test's Redis namespace starts so


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 20.0, alive: Callable[[], bool] | None = None
) -> None:
    """Until something accepts connections on 127.0.0.1:`port` (or `alive()` turns False)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if alive is not None and not alive():
                raise RuntimeError(f"the process for port {port} exited") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port}") from None
            time.sleep(0.05)


def wait_until(
    check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll `check` until it returns something true, and return that; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or check}")
        time.sleep(interval)


class _Service:
    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()  # started but never ready (or interrupted while waiting): stop it
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class RedisServer(_Service):
    """A private redis-server on a free loopback port, for tests that stop Redis."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.dir / "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port, alive=lambda: self._proc is not None and self._proc.poll() is None)

    def stop(self) -> None:
        """Kill it (SIGKILL, as a crash): clients get connection errors until `start()`."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


def _as_postgres(args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """Run a PostgreSQL binary as the `postgres` OS user (it refuses to run as root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *args], check=True, capture_output=True, **kwargs)


class PostgresCluster(_Service):
    """A throwaway PostgreSQL cluster on a free port, for tests that stop the database.

    :param disk_mb: put the whole cluster (data and WAL) on a tmpfs of this size (root
        only), which `fill_disk()` fills up and `free_disk()` frees again.
    """

    def __init__(self, port: int | None = None, disk_mb: int | None = None) -> None:
        self.port = port or free_port()
        self.bin = _postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-pg-"))
        self.data = self.dir / "data"
        self._mounted = False
        if disk_mb is not None:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={disk_mb}m", "tmpfs",
                            str(self.dir)], check=True, capture_output=True)  # fmt: skip
            self._mounted = True
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._initialised = False

    @property
    def _filler(self) -> Path:
        return self.dir / "filler"

    def fill_disk(self) -> None:
        """Write a file until the cluster's filesystem has no space left."""
        block = b"\0" * (1 << 20)
        with contextlib.suppress(OSError), open(self._filler, "ab") as filler:
            while True:
                filler.write(block)
                filler.flush()

    def free_disk(self) -> None:
        self._filler.unlink(missing_ok=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        if not self._initialised:
            _as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                          "postgres", "-E", "UTF8", "--no-sync", "--no-instructions"])  # fmt: skip
            self._initialised = True
        # fsync off is safe for what tests do (kill the server, never the machine: the OS
        # still holds every write). synchronous_commit stays on: with it off, a commit the
        # client was told about can vanish when the server is killed.
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off"
        )
        _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                      "-l", str(self.dir / "log"), "-w", "-t", "30", "start"])  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; `immediate` drops every connection at once, as a crash does."""
        _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def create_database(self, name: str | None = None, *, migrate: bool = True) -> str:
        """A new database on this cluster (migrated to head unless told not to); its URL."""
        import psycopg

        name = name or f"outbox_{uuid.uuid4().hex[:8]}"
        conninfo = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        if migrate:
            from outbox.migrate import upgrade

            upgrade(self.url(name))
        return self.url(name)

    def close(self) -> None:
        if self._initialised:
            subprocess.run(
                [*(["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []),
                 str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                capture_output=True, check=False,
            )  # fmt: skip
        if self._mounted:
            subprocess.run(["umount", str(self.dir)], capture_output=True, check=False)
            self._mounted = False
        shutil.rmtree(self.dir, ignore_errors=True)


def fresh_namespace() -> str:
    """A Redis key namespace of its own for one test, marked with this process's pid so that
    the process can clear its own namespaces when it ends (`clear_test_namespaces`)."""
    return f"{TEST_NAMESPACE_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def clear_test_namespaces(redis_url: str) -> None:
    """Delete the keys this process's tests left in a shared Redis (other runs' stay)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        keys = list(client.scan_iter(f"{TEST_NAMESPACE_PREFIX}{os.getpid()}-*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    except redis.RedisError:
        pass  # a run whose Redis went away has nothing left to clear there
    finally:
        client.close()


def outbox_env(
    database_url: str,
    *,
    redis_url: str = "redis://127.0.0.1:6379/0",
    namespace: str | None = None,
    handler_table: str | None = None,
    **settings: Any,
) -> dict[str, str]:
    """The environment of an outbox process for a test: its own database and Redis namespace.

    Extra keyword arguments are settings by field name (`lease_seconds=2`), set as the
    upper-cased variables.
    """
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_NAMESPACE": namespace or fresh_namespace(),
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "INFO",
    }
    if handler_table:
        env["HANDLER_TABLE"] = handler_table
    env.update({name.upper(): str(value) for name, value in settings.items()})
    return env


class OutboxProcess(_Service):
    """A real OS process (by default the `outbox` command of this venv), in its own group.

    :param args: arguments after `outbox` (`["worker", "-p", "1"]`), or a full argv when
        `command` is given.
    :param env: added to this process's environment (see `outbox_env`).
    :param port: wait until this port accepts connections before `start()` returns.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str],
        *,
        port: int | None = None,
        command: Sequence[str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.argv = [*(command or [str(VENV_BIN / "outbox")]), *args]
        self.env = {**os.environ, **env}
        self.port = port
        self.log_path = (log_dir or Path(tempfile.mkdtemp(prefix="outbox-proc-"))) / (
            f"{Path(self.argv[0]).name}-{'-'.join(args[:1])}-{uuid.uuid4().hex[:6]}.log"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            # A pipe nobody reads fills up and freezes a chatty process: a file never does.
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        if self.port is not None:
            try:
                wait_for_port(self.port, alive=self.running)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}:\n{self.output()[-3000:]}") from None

    def wait_for_output(self, text: str, count: int = 1, timeout: float = 30.0) -> None:
        """Until `text` appears `count` times in the output ("Worker process is ready")."""
        wait_until(
            lambda: self.output().count(text) >= count or not self.running(),
            timeout=timeout,
            what=f"{text!r} from {' '.join(self.argv[1:])}",
        )
        if not self.running():
            raise RuntimeError(f"{self.argv} exited:\n{self.output()[-3000:]}")

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a graceful stop), then SIGKILL to the whole group if it lingers."""
        if self.running():
            os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL to every process of the group (a Dramatiq parent and its workers)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_for(stack: contextlib.ExitStack, process: OutboxProcess) -> OutboxProcess:
    """`process` started, and killed (SIGKILL) when `stack` closes.

    For drills that have checked their end state before they close: a graceful stop would
    prove nothing more there, and a worker waits for its threads' in-flight provider calls
    on SIGTERM, which can take many seconds.
    """
    process.start()
    stack.callback(process.kill)
    return process
