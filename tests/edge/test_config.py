"""edge.toml validation: every problem reported with its path; key files checked (0600)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import ConfigError, check_config, load_config
from trust.identity import KeyPair, save_keypair

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
[edge]
factory = "plant-a"
[edge.spool]
path = "spool"
max_bytes = 2048
max_age_s = 60
[edge.group]
readings = 10
seconds = 0.5
[devices.press-1]
kind = "timeseries"
key = { file = "keys/press-1.key" }
sensors = ["temperature"]
[devices.cam-1]
kind = "image"
key = { file = "keys/cam-1.key" }
[sources.cam]
type = "files"
device = "cam-1"
path = "incoming"
"""


def _write(tmp: Path, text: str, keys: bool = True) -> Path:
    (tmp / "keys").mkdir(exist_ok=True)
    if keys:
        for n in ("press-1", "cam-1"):
            if not (tmp / "keys" / f"{n}.key").exists():
                save_keypair(tmp / "keys" / f"{n}.key", KeyPair.generate())
    p = tmp / "edge.toml"
    p.write_text(text)
    return p


def test_good_config_loads_with_paths_resolved(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.factory == "plant-a" and cfg.group.readings == 10 and cfg.group.seconds == 0.5
    assert cfg.spool.path == tmp_path / "spool" and cfg.spool.max_bytes == 2048
    assert cfg.devices["press-1"].key["file"] == tmp_path / "keys" / "press-1.key"
    assert cfg.devices["press-1"].sensors == ("temperature",)
    assert cfg.sources["cam"].type == "files" and cfg.ledger_id("cam-1") == "plant-a-cam-1"
    assert check_config(tmp_path / "edge.toml") == []


def test_every_problem_is_named_by_its_path(tmp_path: Path) -> None:
    bad = GOOD.replace('factory = "plant-a"', 'factory = "bad name!"\ncolour = 1') \
              .replace("readings = 10", "readings = 0").replace('kind = "image"', 'kind = "picture"') \
              .replace('device = "cam-1"', 'device = "cam-9"') \
              + '\n[sources.x]\ntype = "carrier-pigeon"\n[sources.y]\ntype = "files"\ndevice = "cam-1"\n'
    problems = check_config(_write(tmp_path, bad))
    paths = {p.path for p in problems}
    assert {"edge.factory", "edge.colour", "edge.group.readings", "devices.cam-1.kind", "sources.cam.device",
            "sources.x.type", "sources.y"} <= paths, problems
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "edge.toml")
    assert len(e.value.problems) >= 7 and "check-config" in str(e.value)


def test_key_file_mode_and_missing_key_are_problems(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD)
    os.chmod(tmp_path / "keys" / "cam-1.key", 0o644)
    os.remove(tmp_path / "keys" / "press-1.key")
    problems = {p.path: p.message for p in check_config(p)}
    assert "chmod 600" in problems["devices.cam-1.key.file"]
    assert "keygen" in problems["devices.press-1.key.file"]


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "edge.toml").write_text("[edge\nfactory=")
    (problem,) = check_config(tmp_path / "edge.toml")
    assert "not valid TOML" in problem.message
    (problem,) = check_config(tmp_path / "nope.toml")
    assert "no such file" in problem.message


def test_check_config_cli_json_and_exit_codes(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD)

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sealstream", "edge", "check-config", "--config", str(p),
                               "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)

    r = run()
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True, r.stderr
    p.write_text(GOOD.replace('kind = "timeseries"', 'kind = "ts"'))
    r = run()
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and not doc["ok"]
    assert [x["path"] for x in doc["problems"]] == ["devices.press-1.kind", "devices.press-1.sensors"]
