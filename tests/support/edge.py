"""`EdgeAgent`: one ``sealstream edge run --config CFG`` subprocess, on `infra.process.Child`.

Its output is appended to ``log``; ``kill`` is the crash (SIGKILL), ``stop_ok`` the clean stop
that must exit 0, ``check`` fails the test with the log's tail once the agent is gone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Mapping

from infra.process import Child

from .workers import metric_total

__all__ = ["EdgeAgent"]


class EdgeAgent(Child):
    """The edge agent of config `cfg`; `metrics_port` is the one its config serves /metrics on."""

    def __init__(self, cfg: Path, env: Mapping[str, str], log: Path, metrics_port: int | None = None) -> None:
        super().__init__("edge agent", [sys.executable, "-m", "sealstream", "edge", "run", "--config", str(cfg)],
                         log_path=log, env=env, metrics_port=metrics_port)

    def check(self) -> None:
        """AssertionError with the log's tail when the agent exited."""
        if not self.alive():
            raise AssertionError(f"edge agent exited {self.returncode}:\n{self.tail()}")

    def metric(self, name: str) -> float:
        """Sum of the samples of `name` on its /metrics (waits up to 20 s for the page)."""
        for _ in range(100):
            try:
                return metric_total(self.metrics(), name)
            except OSError:
                self.check()
                time.sleep(0.2)
        raise AssertionError("the edge agent's /metrics never answered")

    def wait(self, pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.3) -> None:
        """Until `pred()`; AssertionError naming `what` (with the log's tail) after `timeout` or on exit."""
        deadline = time.monotonic() + timeout
        while not pred():
            self.check()
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(interval)

    def stop_ok(self, timeout: float = 60.0) -> None:
        """SIGTERM: the agent must drain and exit 0 within `timeout` (else it is killed, exit -9)."""
        code = self.stop(timeout)
        assert code == 0, f"edge agent exited {code} on SIGTERM within {timeout:.0f} s:\n{self.tail()}"
