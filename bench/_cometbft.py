"""The CometBFT peer: a 4-validator CometBFT v0.38 testnet on loopback, kvstore app.

Install: `go install github.com/cometbft/cometbft/cmd/cometbft@v0.38.26` with
GOTOOLCHAIN=local and GOBIN=~/.cache/sealstream/cometbft/v0.38.26/, built once
and reused (the binary's `version` is checked).

Testnet: `cometbft testnet --v N --o DIR` generates keys, genesis and configs;
then every node's config.toml is rewritten so that all N nodes run on
127.0.0.1 with their own free ports.  What differs from CometBFT's defaults
(and why):

  [base]       proxy_app = "kvstore"        built-in in-memory kvstore app (no ABCI socket)
               log_level = "error"          logs cost CPU on a 2-core machine
  [rpc]        laddr = tcp://127.0.0.1:<free port>
               max_subscription_clients >= clients + 8
                                            each broadcast_tx_commit is one event-bus subscriber
  [p2p]        laddr = tcp://127.0.0.1:<free port>, persistent_peers = the others on 127.0.0.1
               addr_book_strict = false, allow_duplicate_ip = true, pex = false
                                            (all peers share one loopback address, fixed topology)
               flush_throttle_timeout = 1ms (default 100ms, a WAN value; see the sweep below)
               send_rate = recv_rate = 20 MB/s (default 5 MB/s)
  [mempool]    size = max(5000, 4 x clients) (never the bottleneck in a closed loop)
  [consensus]  create_empty_blocks = false  (like our ledger: no empty blocks when idle)
               timeout_commit = 10ms        (default 1s: the time a new height waits to collect txs)
               timeout_propose = 1s, timeout_prevote = timeout_precommit = 100ms
                                            (defaults 3s/1s/1s; only matter when a round fails)
               peer_gossip_sleep_duration = 1ms (default 100ms)

The last three were chosen as the best of a sweep on this machine (4 validators,
closed loop, 256 B txs, 6 s runs, load average 2-7 on 2 cores, 2026-11-21):

    gossip sleep + flush   timeout_commit   32 clients            128 clients
    100ms (defaults)       50ms             48 tx/s, p50 693 ms   -
    10ms                   50ms             340 tx/s, p50 94 ms   -
    1ms                    50ms             460 tx/s, p50 69 ms   -
    1ms                    25ms             752 tx/s, p50 41 ms   940 tx/s, p50 132 ms
    1ms                    10ms             804-813 tx/s, 37 ms   1353 tx/s, p50 91 ms
    1ms                    0ms              454 tx/s, p50 70 ms   851 tx/s, p50 146 ms
    0ms                    10ms             12 tx/s (busy loops starve the 2 cores)

so the peer is compared in its best configuration found here, not a
handicapped one.  Both knobs are parameters (bench/ledger.py
--cometbft-timeout-commit, --cometbft-gossip-sleep).
Everything else (goleveldb, WAL fsync, kv tx indexer, signature checks) stays
as shipped.  Only loopback addresses are used.

Commit latency is measured with RPC `broadcast_tx_commit`: it runs CheckTx,
subscribes to the tx's event and answers only after the block containing the
tx has been committed by consensus and executed (FinalizeBlock + Commit) on
the node that received it; so submit -> response is the honest submit-to-
commit latency, with no polling interval added (`broadcast_tx_sync` + polling
`/tx` would add the polling period; `broadcast_tx_async` measures nothing).
A tx counts as successful only if both check_tx.code and tx_result.code are 0.
Clients are spread round-robin over the N nodes' RPC endpoints, over
keep-alive HTTP/1.1 connections (a minimal asyncio client, ~0.13 ms of CPU
per tx against ~0.26 ms for aiohttp, measured here at 128 clients; the load
generator's own CPU share is in each run's `client_cores`).

Processes: each node runs in its own session (process group) with
PR_SET_PDEATHSIG=SIGKILL on Linux, so it dies with this process even on
SIGKILL; `stop()` sends SIGTERM to every group, waits <= 10 s, then SIGKILL,
and is called from `finally`/`atexit`.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

COMETBFT_VERSION = "v0.38.26"
COMETBFT_MODULE = "github.com/cometbft/cometbft/cmd/cometbft"
CACHE_DIR = Path(os.path.expanduser("~/.cache/sealstream/cometbft")) / COMETBFT_VERSION


class CometBFTUnavailable(RuntimeError):
    """CometBFT could not be installed or started; the message says why in one sentence."""


# ----------------------------------------------------------------- install


def ensure_cometbft(cache_dir: Path = CACHE_DIR, build_timeout: float = 1200.0) -> Path:
    """Return the cached cometbft binary, building it with `go install` the first time."""
    binary = cache_dir / "cometbft"
    want = COMETBFT_VERSION.lstrip("v")
    if binary.exists() and _binary_version(binary) == want:
        return binary
    go = shutil.which("go")
    if go is None:
        raise CometBFTUnavailable(
            f"Go is not installed (no `go` on PATH), so CometBFT {COMETBFT_VERSION} cannot be built: "
            "install Go >= 1.22 and retry."
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOTOOLCHAIN="local", GOBIN=str(cache_dir))
    cmd = [go, "install", f"{COMETBFT_MODULE}@{COMETBFT_VERSION}"]
    print(f"building CometBFT {COMETBFT_VERSION} once into {cache_dir} ...", file=sys.stderr, flush=True)
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=build_timeout)
    except subprocess.TimeoutExpired as e:
        raise CometBFTUnavailable(f"`{' '.join(cmd)}` did not finish within {build_timeout:.0f} s.") from e
    if p.returncode != 0 or not binary.exists():
        last = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CometBFTUnavailable(
            f"`go install {COMETBFT_MODULE}@{COMETBFT_VERSION}` failed (exit {p.returncode}): {last[0]}"
        )
    got = _binary_version(binary)
    if got != want:
        raise CometBFTUnavailable(f"built cometbft reports version {got!r}, expected {want}.")
    return binary


def _binary_version(binary: Path) -> str | None:
    try:
        p = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


# ----------------------------------------------------------------- config


def set_toml(text: str, section: str, key: str, value: str) -> str:
    """Replace `key = ...` inside `[section]` ('' = top level) of a CometBFT config.toml.

    `value` is already TOML (quote strings yourself).  Raises KeyError if the
    key is not in that section, so a renamed option fails loudly.
    """
    lines = text.split("\n")
    cur = ""
    for i, line in enumerate(lines):
        m = re.match(r"^\s*\[([^\]]+)\]\s*$", line)
        if m:
            cur = m.group(1).strip()
            continue
        if cur == section and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            lines[i] = f"{key} = {value}"
            return "\n".join(lines)
    raise KeyError(f"{key} not found in [{section or 'top level'}]")


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _pdeathsig() -> None:  # runs in the child between fork and exec
    os.setsid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


# ----------------------------------------------------------------- testnet


_DIR_PREFIX = "sealstream-cometbft-"


def reap_stale_workdirs(base: Path | None = None) -> list[Path]:
    """Remove testnet dirs left by a run that was SIGKILLed (its owner pid is gone).

    The nodes themselves die with their parent (PR_SET_PDEATHSIG); only their
    files can outlive a SIGKILL.
    """
    base = Path(base or tempfile.gettempdir())
    removed = []
    for d in base.glob(_DIR_PREFIX + "*"):
        try:
            owner = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # not ours or still being created
        try:
            os.kill(owner, 0)
            continue  # owner alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


class CometBFTTestnet:
    """N validators on 127.0.0.1; use as a context manager or start()/stop()."""

    def __init__(
        self,
        binary: Path,
        n: int = 4,
        *,
        clients: int = 32,
        timeout_commit: str = "10ms",
        create_empty_blocks: bool = False,
        lan_sleep: str = "1ms",
        workdir: Path | None = None,
        keep: bool = False,
    ) -> None:
        if n < 1:
            raise ValueError("n >= 1")
        self.binary = Path(binary)
        self.n = n
        self.clients = clients
        self.timeout_commit = timeout_commit
        self.create_empty_blocks = create_empty_blocks
        self.lan_sleep = lan_sleep  # p2p flush_throttle_timeout and consensus peer_gossip_sleep_duration
        self._own_dir = workdir is None
        if workdir is None:
            reap_stale_workdirs()
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        if self._own_dir and not keep:  # lets a later run reap it if we are SIGKILLed
            (self.workdir / "owner.pid").write_text(str(os.getpid()))
        self.keep = keep
        self.procs: list[subprocess.Popen] = []
        self.rpc_ports: list[int] = []
        self.p2p_ports: list[int] = []
        self._logs: list = []
        self._stopped = False

    # -- setup
    def _run(self, *args: str, timeout: float = 60) -> str:
        p = subprocess.run([str(self.binary), *args], capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise CometBFTUnavailable(f"`cometbft {' '.join(args)}` failed: {(p.stderr or p.stdout).strip()[-300:]}")
        return p.stdout

    def home(self, i: int) -> Path:
        return self.workdir / f"node{i}"

    def configure(self) -> None:
        self._run("testnet", "--v", str(self.n), "--n", "0", "--o", str(self.workdir), "--starting-ip-address",
                  "127.0.0.1")
        ports = _free_ports(2 * self.n)
        self.p2p_ports, self.rpc_ports = ports[: self.n], ports[self.n :]
        ids = [self._run("show-node-id", "--home", str(self.home(i))).strip() for i in range(self.n)]
        for i in range(self.n):
            cfg = self.home(i) / "config" / "config.toml"
            t = cfg.read_text()
            peers = ",".join(f"{ids[j]}@127.0.0.1:{self.p2p_ports[j]}" for j in range(self.n) if j != i)
            for section, key, value in [
                ("", "proxy_app", '"kvstore"'),
                ("", "moniker", f'"node{i}"'),
                ("", "log_level", '"error"'),
                ("rpc", "laddr", f'"tcp://127.0.0.1:{self.rpc_ports[i]}"'),
                ("rpc", "max_subscription_clients", str(max(100, self.clients + 8))),
                ("p2p", "laddr", f'"tcp://127.0.0.1:{self.p2p_ports[i]}"'),
                ("p2p", "external_address", '""'),
                ("p2p", "persistent_peers", f'"{peers}"'),
                ("p2p", "addr_book_strict", "false"),
                ("p2p", "allow_duplicate_ip", "true"),
                ("p2p", "pex", "false"),
                ("p2p", "flush_throttle_timeout", f'"{self.lan_sleep}"'),
                ("p2p", "send_rate", "20480000"),
                ("p2p", "recv_rate", "20480000"),
                ("mempool", "size", str(max(5000, 4 * self.clients))),
                ("consensus", "create_empty_blocks", "true" if self.create_empty_blocks else "false"),
                ("consensus", "timeout_commit", f'"{self.timeout_commit}"'),
                ("consensus", "timeout_propose", '"1s"'),
                ("consensus", "timeout_prevote", '"100ms"'),
                ("consensus", "timeout_precommit", '"100ms"'),
                ("consensus", "peer_gossip_sleep_duration", f'"{self.lan_sleep}"'),
                ("instrumentation", "prometheus", "false"),
            ]:
                t = set_toml(t, section, key, value)
            cfg.write_text(t)

    # -- lifecycle
    def start(self, ready_timeout: float = 60.0) -> None:
        atexit.register(self.stop)
        try:
            self.configure()
            for i in range(self.n):
                log = open(self.home(i) / "node.log", "wb")
                self._logs.append(log)
                self.procs.append(
                    subprocess.Popen(
                        [str(self.binary), "start", "--home", str(self.home(i))],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        preexec_fn=_pdeathsig,
                        close_fds=True,
                    )
                )
            self.wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise

    def _get(self, i: int, path: str, timeout: float = 2.0) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.rpc_ports[i]}/{path}", timeout=timeout) as r:
            return json.loads(r.read())

    def wait_ready(self, timeout: float) -> None:
        """All nodes answer /status, see n-1 peers, and the chain is at height >= 1."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    raise CometBFTUnavailable(f"cometbft node{i} exited with {p.returncode}: {self._tail(i)}")
            try:
                ok = True
                for i in range(self.n):
                    st = self._get(i, "status")["result"]
                    h = int(st["sync_info"]["latest_block_height"])
                    peers = int(self._get(i, "net_info")["result"]["n_peers"])
                    if h < 1 or peers < self.n - 1:
                        ok, last = False, f"node{i}: height {h}, {peers} peers"
                        break
                if ok:
                    return
            except (OSError, ValueError, KeyError) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.2)
        raise CometBFTUnavailable(f"CometBFT testnet not ready after {timeout:.0f} s ({last}).")

    def _tail(self, i: int) -> str:
        try:
            return (self.home(i) / "node.log").read_text(errors="replace").strip()[-400:]
        except OSError:
            return ""

    def heights(self) -> list[int]:
        return [int(self._get(i, "status")["result"]["sync_info"]["latest_block_height"]) for i in range(self.n)]

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every node's process group, wait <= grace s, then SIGKILL. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        for f in self._logs:
            f.close()
        if self._own_dir and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        try:
            atexit.unregister(self.stop)
        except Exception:  # noqa: BLE001 - best effort at exit  # pragma: no cover
            pass

    def __enter__(self) -> "CometBFTTestnet":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ----------------------------------------------------------------- target


class _KeepAliveHTTP:
    """Minimal asyncio HTTP/1.1 POST client with per-port keep-alive connection pools.

    Half aiohttp's CPU per request (0.13 vs 0.26 ms measured here), which
    matters on a 2-core machine shared with the 4 nodes.  One request per
    connection at a time, so each in-flight broadcast_tx_commit has its own
    remote address (its own event-bus subscriber).

    The RPC server closes connections idle for its read timeout (10 s), so a
    pooled connection idle for more than `max_idle` s is dropped, and a request
    on a reused connection that the server had already closed (EOF before any
    response byte) is sent once more on a fresh connection.  A closed idle
    connection never read the request, so this cannot submit a tx twice; were
    it ever to, CometBFT's mempool cache would refuse the copy and the tx
    would be counted as failed, not as two successes.
    """

    max_idle = 4.0

    def __init__(self) -> None:
        self._idle: dict[int, list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]]] = {}

    async def post(self, port: int, body: bytes, path: str = "/") -> bytes:
        idle = self._idle.setdefault(port, [])
        now = time.monotonic()
        while idle:
            r, w, used = idle.pop()
            if now - used <= self.max_idle and not r.at_eof() and not w.is_closing():
                try:
                    return await self._exchange(idle, r, w, port, body, path)
                except _StaleConnection:
                    break  # retry below, once, on a fresh connection
            w.close()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await self._exchange(idle, r, w, port, body, path)
        except _StaleConnection as e:
            raise ConnectionError("RPC server closed a fresh connection without answering") from e

    async def _exchange(self, idle: list, r: asyncio.StreamReader, w: asyncio.StreamWriter, port: int, body: bytes,
                        path: str) -> bytes:
        try:
            w.write(
                b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (path.encode(), port, len(body), body)
            )
            try:
                await w.drain()
                status = await r.readline()
            except (ConnectionResetError, BrokenPipeError) as e:
                raise _StaleConnection() from e
            if status == b"":
                raise _StaleConnection()
            if not status.startswith(b"HTTP/1.1 "):
                raise ConnectionError(f"bad HTTP status line {status[:60]!r}")
            length, chunked, close = None, False, False
            while True:
                line = await r.readline()
                if line in (b"\r\n", b""):
                    break
                k, _, v = line.partition(b":")
                k, v = k.strip().lower(), v.strip().lower()
                if k == b"content-length":
                    length = int(v)
                elif k == b"transfer-encoding" and b"chunked" in v:
                    chunked = True
                elif k == b"connection" and v == b"close":
                    close = True
            if chunked:
                parts = []
                while True:
                    n = int((await r.readline()).split(b";")[0], 16)
                    if n == 0:
                        await r.readline()
                        break
                    parts.append(await r.readexactly(n))
                    await r.readexactly(2)
                data = b"".join(parts)
            elif length is not None:
                data = await r.readexactly(length)
            else:
                data, close = await r.read(), True
            code = int(status.split()[1])
            if code != 200 and not data.lstrip().startswith(b"{"):  # JSON-RPC errors are judged by the caller
                raise ConnectionError(f"HTTP {code}: {data[:120]!r}")
        except BaseException:
            w.close()
            raise
        if close:
            w.close()
        else:
            idle.append((r, w, time.monotonic()))
        return data

    async def close(self) -> None:
        for conns in self._idle.values():
            for _r, w, _t in conns:
                w.close()
        self._idle.clear()


class _StaleConnection(Exception):
    """The server had closed this connection before answering (nothing was read)."""


class CometBFTTarget:
    """The LedgerTarget interface (bench/_target.py) over a CometBFT testnet."""

    def __init__(
        self,
        *,
        clients: int = 32,
        timeout_commit: str = "10ms",
        create_empty_blocks: bool = False,
        lan_sleep: str = "1ms",
        keep: bool = False,
    ) -> None:
        self.name = f"CometBFT {COMETBFT_VERSION} (kvstore)"
        self.clients = clients
        self.timeout_commit = timeout_commit
        self.create_empty_blocks = create_empty_blocks
        self.lan_sleep = lan_sleep
        self.keep = keep
        self.net: CometBFTTestnet | None = None
        self._http = _KeepAliveHTTP()
        self._rr = 0

    def start(self, n_nodes: int, n_sealers: int) -> None:
        if n_nodes != n_sealers:
            raise ValueError("the CometBFT peer runs validators only (n_nodes == n_sealers)")
        binary = ensure_cometbft()
        self.net = CometBFTTestnet(
            binary,
            n_nodes,
            clients=self.clients,
            timeout_commit=self.timeout_commit,
            create_empty_blocks=self.create_empty_blocks,
            lan_sleep=self.lan_sleep,
            keep=self.keep,
        )
        self.net.start()

    def _url(self) -> str:
        assert self.net is not None, "start() first"
        self._rr += 1
        return f"http://127.0.0.1:{self.net.rpc_ports[self._rr % self.net.n]}/"

    @staticmethod
    def _body(tx: bytes) -> bytes:
        return json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "broadcast_tx_commit",
             "params": {"tx": base64.b64encode(tx).decode()}}
        ).encode()

    @staticmethod
    def _check(resp: dict) -> None:
        if "error" in resp and resp["error"]:
            e = resp["error"]
            raise RuntimeError(f"rpc error: {e.get('data') or e.get('message')}")
        r = resp["result"]
        if int(r["check_tx"]["code"]) != 0:
            raise RuntimeError(f"check_tx code {r['check_tx']['code']}: {r['check_tx'].get('log', '')}")
        if int(r["tx_result"]["code"]) != 0:
            raise RuntimeError(f"tx_result code {r['tx_result']['code']}: {r['tx_result'].get('log', '')}")

    def submit(self, tx: bytes) -> None:
        req = urllib.request.Request(self._url(), data=self._body(tx), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            self._check(json.loads(r.read()))

    async def asubmit(self, tx: bytes) -> None:
        assert self.net is not None, "start() first"
        self._rr += 1
        port = self.net.rpc_ports[self._rr % self.net.n]
        self._check(json.loads(await self._http.post(port, self._body(tx))))

    async def aclose(self) -> None:
        await self._http.close()

    def stop(self) -> None:
        if self.net is not None:
            self.net.stop()
