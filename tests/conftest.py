"""Shared fixtures, and the test tiers.

Tests that need the local stack ask for ``stack``: it brings the stack up (idempotent, seconds
when it already runs) or fails loudly — never skips.

Tiers: a test is marked ``services`` when any fixture it uses, directly or through other fixtures,
is one of `SERVICE_FIXTURES` (the stack, a ledger cluster of node processes, a SoftHSM token), when
its module uses a helper of `SERVER_HELPERS` (they start real servers: mosquitto, OPC UA, Modbus,
SoftHSM), or when the test or its module says so itself (``pytest.mark.services``: it starts
servers, node processes or workers in its body). ``make check`` runs ``-m "not services"`` with
``SEALSTREAM_TEST_TIER=check``, under which `stack` fails at once instead of starting anything;
``make test`` runs everything.
"""

from __future__ import annotations

import os

import pytest
import kafka_principals
from secret_scan import SecretScan

from infra import Stack
from sealstream.settings import Settings, load_settings

#: Fixtures that start or reach real services. Every fixture built on them (``pool``,
#: ``blob_store``, ``dataset``, ``dev_settings``, ...) is covered through pytest's fixture closure.
SERVICE_FIXTURES = frozenset({
    "stack",  # Kafka, MinIO, PostgreSQL, Prometheus (tests/*/conftest.py build on it)
    "make_cluster",  # a ledger of node processes over TCP (tests/ledger/conftest.py)
    "cluster",  # the same, per module (tests/verify/conftest.py, test_reputation_cluster.py)
    "hsm",  # a SoftHSM token (tests/edge/test_pkcs11.py)
})
#: Modules whose functions start real servers: a private mosquitto, the device stand-ins of
#: edge/simulators.py (OPC UA, Modbus) and tests/edge/_pkcs11_token.py (SoftHSM).
SERVER_HELPERS = frozenset({"infra.mosquitto", "edge.simulators", "_pkcs11_token"})
#: ``SEALSTREAM_TEST_TIER`` value of ``make check``: no service may be started.
CHECK_TIER = "check"

# Security on (issue 17): throwaway test homes, private brokers and clusters use the stack's CA, its
# principals' certificates and its Kafka, PostgreSQL and MinIO secrets (`Settings.stack_home`).
os.environ.setdefault("SEALSTREAM_STACK_HOME", str(load_settings().home.expanduser().resolve()))
kafka_principals.install()  # in-process simulator runs enrol their factory (tests/kafka_principals.py)


def _uses_server_helpers(module: object) -> bool:
    return any(getattr(v, "__module__", None) in SERVER_HELPERS or getattr(v, "__name__", None) in SERVER_HELPERS
               for v in vars(module).values())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    services = pytest.mark.services
    helpers: dict[object, bool] = {}
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and module not in helpers:
            helpers[module] = _uses_server_helpers(module)
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())) or helpers.get(module, False):
            item.add_marker(services)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Stack:
    if os.environ.get("SEALSTREAM_TEST_TIER") == CHECK_TIER:
        pytest.fail("this test needs the stack, but the `make check` tier starts no service: mark it (or a "
                    "fixture it uses) in tests/conftest.py SERVICE_FIXTURES, or run it with `make test`")
    st = Stack(settings)
    st.up()
    return st


# -- no secret in any output (issue 17): see tests/secret_scan.py ------------------------------------
_SCAN: SecretScan | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _SCAN
    _SCAN = scan = SecretScan(load_settings().home.expanduser().resolve())
    from click.testing import CliRunner

    original = CliRunner.invoke
    if getattr(original, "_secret_scan", False):
        return

    def invoke(self, cli, args=None, *a, **kw):  # type: ignore[no-untyped-def]
        result = original(self, cli, args, *a, **kw)
        scan.check(f"the output of `sealstream {' '.join(map(str, args or ()))}`", result.output)
        return result

    invoke._secret_scan = True  # type: ignore[attr-defined]
    CliRunner.invoke = invoke  # type: ignore[method-assign]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _SCAN is not None:
        for name, text in report.sections:
            _SCAN.check(f"{report.nodeid} ({name})", text)
        _SCAN.check(f"{report.nodeid} (report)", str(report.longrepr) if report.longrepr else None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SCAN is None:
        return
    _SCAN.check_files()
    if _SCAN.findings:
        session.config.get_terminal_writer().line(_SCAN.report(), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
