"""Grafana dashboards as code (grafana-foundation-sdk) and their provisioning files.

`dashboards.build` renders **Chain health**, **Pipeline** and **Verification**
plus the datasource and provider YAML into ``dashboards/provisioning/``;
`dashboards.push` sends folder, datasources and dashboards to a running
Grafana over stdlib HTTP. See docs/dashboards.md.
"""

from .build import BOARDS, PROVISIONING, dashboards, load, render, stale, to_dict, write
from .datasources import FOLDER_UID, POSTGRES, PROMETHEUS, Endpoints

__all__ = ["BOARDS", "PROVISIONING", "dashboards", "load", "render", "stale", "to_dict", "write",
           "FOLDER_UID", "POSTGRES", "PROMETHEUS", "Endpoints"]
