"""The demo's verification story without services: verdicts from a verify command's exit code and
report, bundle file names, and the human summary printing each verdict with its commands."""

from __future__ import annotations

from pathlib import Path

from sealstream._demo_cli import _print_verification
from sealstream._demo_verify import Check, Verification, _verdict, bundle_path
from sealstream._output import out


def test_verdict_follows_the_exit_code_and_report() -> None:
    ok = _verdict(Check("blob", "ab" * 32, "error", ["sealstream verify blob " + "ab" * 32]), 0,
                  {"ok": True, "genesis_pinned": True}, "")
    assert ok.ok and ok.verdict == "verified" and ok.genesis_pinned is True
    failed = _verdict(Check("bundle", "gw-1", "error", []), 1,
                      {"ok": False, "failed_step": "genesis", "failures": [{"message": "not the pinned genesis"}],
                       "genesis_pinned": True}, "")
    assert not failed.ok and (failed.verdict, failed.failed_step, failed.detail) == (
        "failed", "genesis", "not the pinned genesis")
    unpinned = _verdict(Check("bundle", "gw-1", "error", []), 2, {}, "error: no trust anchor pinned")
    assert (unpinned.verdict, unpinned.detail) == ("error", "error: no trust anchor pinned")
    crashed = _verdict(Check("blob", "x", "error", []), 1, {}, "ImportError: cannot import name 'x'")
    assert (crashed.verdict, crashed.failed_step, crashed.detail) == ("error", None,
                                                                      "ImportError: cannot import name 'x'")
    # exit 0 without an ok report is not a verification
    assert _verdict(Check("blob", "x", "error", []), 0, {}, "").verdict == "error"


def test_bundle_path_is_a_plain_file_name_in_the_state_directory(tmp_path: Path) -> None:
    assert bundle_path(tmp_path, "gw-0-3f2a") == tmp_path / "batch-gw-0-3f2a.zip"
    assert bundle_path(tmp_path, "../x/y z").parent == tmp_path


def test_the_story_prints_each_verdict_with_its_commands() -> None:
    genesis = "5b" * 32
    v = Verification("sealstream-demo-1-verifier", genesis, complete=True,
                     batches={"verified": 3, "failed": 1, "pending": 0},
                     failed_batches=[{"batch_id": "gw-0-bad", "failed_step": "row-value", "detail": "changed"}],
                     rows=120, verified_rows=90, verified_share=0.75)
    v.blob = Check("blob", "ab" * 32, "verified", [f"sealstream verify blob {'ab' * 32}"])
    v.bundle = Check("bundle", "gw-0-good", "failed",
                     ["sealstream evidence export batch gw-0-good -o /s/batch-gw-0-good.zip",
                      f"sealstream evidence verify /s/batch-gw-0-good.zip --genesis-hash {genesis}"],
                     failed_step="certificate", detail="below quorum", records=4, rows=40)
    with out.capture() as cap:
        _print_verification(v)
    text = cap.get()
    assert "verified_readings: 90 of 120 rows of this run (75.0%)" in text
    assert "batch verdicts: 3 verified, 1 failed" in text and "gw-0-bad: row-value: changed" in text
    assert f"$ sealstream verify blob {'ab' * 32}" in text
    assert "$ sealstream evidence export batch gw-0-good -o /s/batch-gw-0-good.zip" in text
    assert f"$ sealstream evidence verify /s/batch-gw-0-good.zip --genesis-hash {genesis}" in text
    assert "FAILED at step certificate (below quorum)" in text and "VERIFIED" in text
