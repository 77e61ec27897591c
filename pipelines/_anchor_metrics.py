"""The anchor agent's sweep and deferral metrics, on the worker's `PipelineMetrics` registry.

Kept beside the anchor agent (registered on first use, once per `PipelineMetrics`), so the names
live with the code that updates them; off (no-ops) when the worker's metrics are off.

- ``sealstream_pipeline_anchor_deferred_total{reason}``: seals acked without a batch because they cannot
  be batched *yet* (``unknown-gateway``: the sealing key is bound to nothing on our ledger); their
  statement is stored sealed here, so the sweep batches it once it can;
- ``sealstream_pipeline_anchor_sweep_found_total``: sealed statements the sweep found in no batch past
  the grace period (and batched, unless another worker did first);
- ``sealstream_pipeline_anchor_sweep_waiting{reason}`` (gauge): sealed statements past the grace in no
  batch that the last sweep left alone (``unknown-gateway``: not registered yet, or another ledger's;
  ``not-a-gateway``);
- ``sealstream_pipeline_anchor_sweep_passes_total{outcome}``: sweep passes, ``ok`` or ``error`` (retried
  at the next pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from prometheus_client import Counter, Gauge

from .metrics import PipelineMetrics, _Off

__all__ = ["AnchorSweepMetrics", "sweep_metrics"]

_ATTR = "_anchor_sweep_metrics"


@dataclass(frozen=True)
class AnchorSweepMetrics:
    deferred: Any
    sweep_found: Any
    sweep_waiting: Any
    sweep_passes: Any


def sweep_metrics(metrics: Optional[PipelineMetrics]) -> AnchorSweepMetrics:
    """The sweep metrics of `metrics` (registered on its registry the first time); no-ops when
    `metrics` is None or switched off."""
    if metrics is None or isinstance(getattr(metrics, "anchor_skipped", None), _Off):
        off = _Off()
        return AnchorSweepMetrics(off, off, off, off)
    found = getattr(metrics, _ATTR, None)
    if found is None:
        r = metrics.registry
        found = AnchorSweepMetrics(
            Counter("sealstream_pipeline_anchor_deferred",
                    "seals acked without a batch because they cannot be batched yet (their statement is stored "
                    "sealed; the sweep batches it once it can)", ["reason"], registry=r),
            Counter("sealstream_pipeline_anchor_sweep_found",
                    "sealed statements found in no batch past the grace period by the sweep", registry=r),
            Gauge("sealstream_pipeline_anchor_sweep_waiting",
                  "sealed statements past the grace in no batch that the last sweep left alone", ["reason"],
                  registry=r),
            Counter("sealstream_pipeline_anchor_sweep_passes", "sweep passes by outcome (ok, error)", ["outcome"],
                    registry=r),
        )
        setattr(metrics, _ATTR, found)
    return found
