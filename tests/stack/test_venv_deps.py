"""Regression: the venv's ``urllib3`` is real urllib3, not urllib3-future's copy of itself.

MinIO's client (storage/blobs.py, the pipeline's blob PUTs, its hottest path)
runs on whatever ``urllib3`` is installed. urllib3-future, which niquests
needs (grafana-client brought it in until `dashboards push` moved to the
standard library), overwrites the ``urllib3`` package with itself from a
``.pth`` file at every interpreter start; MinIO then spent about 35% more CPU
per PUT (~870 vs ~650 µs per 19 KB PUT, 8 threads). infra/bootstrap.sh
removes the fork from venvs made before; these tests fail if it is there or
if a dependency brings it back.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import importlib.util
import re
from pathlib import Path

import pytest

FORK = {"urllib3-future", "niquests"}


def _name(requirement: str) -> str:
    return re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_urllib3_is_the_real_one() -> None:
    assert importlib.util.find_spec("urllib3_future") is None
    for name in FORK:
        with pytest.raises(md.PackageNotFoundError):
            md.distribution(name)
    version = md.distribution("urllib3").version
    major, minor = (int(part) for part in version.split(".")[:2])
    assert major == 2 and minor < 20, f"urllib3 {version} looks like the fork's numbering (2.2x.x)"

    import urllib3

    # the imported files are urllib3's own: the fork's copy says its own version and leaves a marker
    assert urllib3.__version__ == version
    assert not (Path(urllib3.__file__).parent / ".u3f_sync").exists()


def test_no_installed_package_requires_the_fork() -> None:
    needing = sorted(f"{dist.metadata['Name']} -> {req}" for dist in md.distributions()
                     for req in dist.requires or () if _name(req) in FORK and "extra ==" not in req)
    assert needing == []


def test_urllib3_files_are_its_own() -> None:
    """Every file urllib3's RECORD lists has the recorded hash: nothing copied over them."""
    import minio  # noqa: F401  (imports urllib3 the way the pipeline does)

    dist = md.distribution("urllib3")
    checked = 0
    for file in dist.files or ():
        if file.hash is None or not file.parts or file.parts[0] != "urllib3":
            continue
        digest = base64.urlsafe_b64encode(hashlib.new(file.hash.mode, file.read_binary()).digest()).rstrip(b"=")
        assert digest.decode() == file.hash.value, f"{file} differs from urllib3 {dist.version}'s"
        checked += 1
    assert checked > 10
