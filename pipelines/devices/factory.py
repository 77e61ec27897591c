"""A factory: named devices with Ed25519 keys, persisted so every run uses the same identities.

Layout under ``$SEALSTREAM_HOME/devices/<factory>/``::

    devices.json      manifest: {"v": 1, "factory": ..., "devices": [{did, kind, name, sensors, key_file}]}
    keys/<name>.key   trust.identity key files (mode 0600)
    seq.json          next sequence number per device (see `seqstore`)

A later registry or pipeline loads the manifest to register/resolve the same keys.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sealstream.settings import Settings
from trust.identity import KeyPair, load_keypair, save_keypair

from .kinds import ALL_KINDS, kind_info

__all__ = ["DeviceSpec", "Device", "Factory", "FactoryError", "devices_root", "factory_dir"]

log = logging.getLogger(__name__)
MANIFEST = "devices.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class FactoryError(Exception):
    """A factory that is missing, malformed or misnamed (message names the fix)."""


@dataclass(frozen=True)
class DeviceSpec:
    """One manifest entry: what a registry needs to know about a device."""

    did: str
    kind: str
    name: str
    sensors: tuple[str, ...]
    key_file: str

    def to_json(self) -> dict:
        return {"did": self.did, "kind": self.kind, "name": self.name, "sensors": list(self.sensors),
                "key_file": self.key_file}

    @classmethod
    def from_json(cls, doc: dict) -> "DeviceSpec":
        return cls(doc["did"], doc["kind"], doc["name"], tuple(doc["sensors"]), doc["key_file"])


@dataclass(frozen=True)
class Device:
    """A device spec with its key pair loaded (the index is its position among devices of its kind)."""

    spec: DeviceSpec
    keypair: KeyPair
    index: int

    @property
    def did(self) -> str:
        return self.spec.did

    @property
    def kind(self) -> str:
        return self.spec.kind


def devices_root(settings: Settings) -> Path:
    return Path(settings.home) / "devices"


def factory_dir(settings: Settings, name: str) -> Path:
    if not _NAME.match(name or ""):
        raise FactoryError(f"factory name {name!r} is not valid; use letters, digits, '.', '_' or '-'")
    return devices_root(settings) / name


@dataclass(frozen=True)
class Factory:
    """A loaded factory: its directory and its devices (keys in memory)."""

    name: str
    path: Path
    devices: tuple[Device, ...]

    @classmethod
    def load(cls, settings: Settings, name: str) -> "Factory":
        """Load an existing factory; `FactoryError` if there is none."""
        path = factory_dir(settings, name)
        manifest = path / MANIFEST
        if not manifest.exists():
            raise FactoryError(
                f"factory {name!r} does not exist under {path.parent}; create it with "
                f"`sealstream devices run --factory {name} ...`")
        try:
            doc = json.loads(manifest.read_text("utf-8"))
            specs = [DeviceSpec.from_json(d) for d in doc["devices"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise FactoryError(f"{manifest} is not a valid device manifest ({exc}); "
                               "delete the factory directory") from None
        per_kind: dict[str, int] = {}
        devices = []
        for spec in specs:
            idx = per_kind.get(spec.kind, 0)
            per_kind[spec.kind] = idx + 1
            devices.append(Device(spec, load_keypair(path / spec.key_file), idx))
        return cls(name, path, tuple(devices))

    @classmethod
    def ensure(cls, settings: Settings, name: str, per_kind: int, kinds: tuple[str, ...] = ALL_KINDS) -> "Factory":
        """Load `name`, creating it or adding devices so each kind in `kinds` has at least `per_kind`."""
        path = factory_dir(settings, name)
        (path / "keys").mkdir(parents=True, exist_ok=True)
        manifest = path / MANIFEST
        specs: list[DeviceSpec] = []
        if manifest.exists():
            specs = list(cls.load(settings, name).specs())
        added = []
        for kind in kinds:
            info = kind_info(kind)
            have = sum(1 for s in specs if s.kind == kind)
            for i in range(have, per_kind):
                dev_name = f"{info.short}-{i:03d}"
                key_file = f"keys/{dev_name}.key"
                kp = KeyPair.generate()
                save_keypair(path / key_file, kp)
                spec = DeviceSpec(kp.did, kind, dev_name, info.sensors, key_file)
                specs.append(spec)
                added.append(spec)
        if added or not manifest.exists():
            doc = {"v": 1, "factory": name, "devices": [s.to_json() for s in specs]}
            tmp = manifest.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, indent=1) + "\n", "utf-8")
            os.replace(tmp, manifest)
            log.info("factory devices created", extra={"factory": name, "added": len(added), "total": len(specs)})
        return cls.load(settings, name)

    def specs(self) -> tuple[DeviceSpec, ...]:
        return tuple(d.spec for d in self.devices)

    def select(self, kinds: tuple[str, ...], per_kind: int) -> tuple[Device, ...]:
        """The first `per_kind` devices of each kind in `kinds`."""
        return tuple(d for d in self.devices if d.kind in kinds and d.index < per_kind)

    def by_did(self) -> dict[str, Device]:
        return {d.did: d for d in self.devices}
