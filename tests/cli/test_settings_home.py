"""The state directory is found from any working directory (nearest `.sealstream` upward, like
git), `SEALSTREAM_HOME` wins, and `sealstream settings` never prints a DSN's password."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sealstream.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_home_is_the_nearest_state_directory_upward(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SEALSTREAM_HOME", raising=False)
    (tmp_path / ".sealstream").mkdir()
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert load_settings().home == tmp_path / ".sealstream"
    monkeypatch.setenv("SEALSTREAM_HOME", str(tmp_path / "other"))
    assert load_settings().home == tmp_path / "other"


def test_no_state_directory_anywhere_means_the_local_default(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SEALSTREAM_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert not any((d / ".sealstream").is_dir() for d in (tmp_path, *tmp_path.parents))
    assert load_settings().home == Path(".sealstream")


def test_settings_mask_every_password() -> None:
    env = dict(os.environ, SEALSTREAM_PG_DSN="postgresql://alice:s3cr3t-pw@db:5432/x")
    p = subprocess.run([sys.executable, "-m", "sealstream", "settings", "--json"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "s3cr3t-pw" not in p.stdout and "sealstream-dev-secret" not in p.stdout
    doc = json.loads(p.stdout)
    flat = json.dumps(doc)
    assert "alice:***@db" in flat


def test_every_secret_field_is_masked_whatever_its_service() -> None:
    """A password, secret or token field added later is masked too, without a list to keep."""
    from sealstream.settings import Settings

    names = [n for n in Settings.model_fields if any(w in n for w in ("password", "secret", "token"))
             and not n.endswith("_file")]
    assert names, "the settings carry secret fields"
    values = {n: f"marker-{i}-0123456789" for i, n in enumerate(names)
              if Settings.model_fields[n].annotation in (str, str | None)}
    dumped = json.dumps(load_settings(**values).public_dict())
    for value in values.values():
        assert value not in dumped


def test_status_without_a_state_directory_says_where_it_looked(tmp_path) -> None:
    """From a directory with no `.sealstream` above it, `status` says in one sentence where it looked
    (human: on stderr, beside the table; JSON: ``home_found`` false), and exits 3 (nothing runs there)."""
    env = {k: v for k, v in os.environ.items() if k != "SEALSTREAM_HOME"}
    assert not any((d / ".sealstream").is_dir() for d in (tmp_path, *tmp_path.parents))
    human = subprocess.run([sys.executable, "-m", "sealstream", "status"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert human.returncode == 3, human.stderr
    said = " ".join(human.stderr.split())
    assert f"no state directory at {tmp_path / '.sealstream'}" in said and f"from {tmp_path} upward" in said
    assert "SEALSTREAM_HOME" in said
    doc = subprocess.run([sys.executable, "-m", "sealstream", "status", "--json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    got = json.loads(doc.stdout)
    assert got["home_found"] is False and got["home"] == str(tmp_path / ".sealstream")
