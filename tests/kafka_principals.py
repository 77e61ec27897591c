"""Kafka principals for the tests when security is on (issue 17; docs/pipeline.md "Kafka: TLS,
principals and ACLs").

A factory's devices authenticate as ``factory-<name>``, which exists once the stack enrolled it
(a certificate from the stack CA and its produce-only ACLs: `sealstream stack factory add`).
Tests make a fresh factory per run, so `enrol_factory` does that on the broker of `settings`
(the shared one or a private one), and `install` makes every in-process simulator run enrol its
factory first (tests/conftest.py calls it), as `sealstream devices run` does on a local stack.
With security off both do nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["enrol_factory", "install"]


def enrol_factory(settings: Any, factory: str) -> None:
    from sealstream._kafka_config import kafka_secured

    if not kafka_secured(settings):
        return
    from infra import Stack

    Stack(settings).ensure_factory(factory)


def install() -> None:
    from pipelines.devices import simulator

    if getattr(simulator.Simulator.run, "_enrols", False):
        return
    original = simulator.Simulator.run

    def run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        enrol_factory(self.settings, self.config.factory)
        return original(self, *args, **kwargs)

    run._enrols = True  # type: ignore[attr-defined]
    simulator.Simulator.run = run  # type: ignore[method-assign]
