"""The README's sidecar manifest is valid YAML that fits together, and its TOML is a working configuration."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from edgecache.cli import _proxy_sources, build_parser
from edgecache.config import Settings, first_value
from tests.servers import ROOT

yaml = pytest.importorskip("yaml")


def _section(title: str) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(title)
    end = readme.find("\n#", start + len(title))
    return readme[start : end if end != -1 else None]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def _load_proxy_config(tmp_path: Path, toml: str) -> tuple[list[Any], Settings]:
    path = tmp_path / "edgecache.toml"
    path.write_text(toml, encoding="utf-8")
    sources = _proxy_sources(build_parser().parse_args(["proxy", "--config", str(path)]))
    return sources, Settings.from_sources(sources)


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("EDGECACHE_")]:
        monkeypatch.delenv(name)


def _value(sources: list[Any], name: str) -> str:
    found = first_value(name, sources)
    assert found is not None, name
    return str(found[0])


@pytest.fixture
def manifest() -> dict[str, dict[str, Any]]:
    [block] = _blocks(_section("### As a Kubernetes sidecar"), "yaml")
    documents = list(yaml.safe_load_all(block))
    return {doc["kind"]: doc for doc in documents}


def test_the_manifest_fits_together(
    manifest: dict[str, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_environment(monkeypatch)
    assert set(manifest) == {"ConfigMap", "Secret", "Deployment", "Service"}
    config_map, secret = manifest["ConfigMap"], manifest["Secret"]
    pod = manifest["Deployment"]["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    proxy = containers["edgecache"]

    sources, settings = _load_proxy_config(tmp_path, config_map["data"]["edgecache.toml"])
    assert settings.namespace == "shop" and settings.stale_if_error == 300

    config_path = proxy["args"][proxy["args"].index("--config") + 1]
    [mount] = proxy["volumeMounts"]
    assert config_path == f"{mount['mountPath']}/edgecache.toml"
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]

    [token] = [e for e in proxy["env"] if e["name"] == "EDGECACHE_ADMIN_TOKEN"]
    reference = token["valueFrom"]["secretKeyRef"]
    assert reference["name"] == secret["metadata"]["name"] and reference["key"] in secret["stringData"]

    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    listen, admin_listen = _value(sources, "listen"), _value(sources, "admin_listen")
    assert listen.endswith(f":{ports['http']}") and admin_listen.endswith(f":{ports['admin']}")
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}

    upstream = _value(sources, "upstream")
    app_args = containers["app"]["args"]
    assert upstream.endswith(":" + app_args[app_args.index("--port") + 1])
    assert pod["terminationGracePeriodSeconds"] > float(_value(sources, "shutdown_timeout"))
    [service_port] = manifest["Service"]["spec"]["ports"]
    assert service_port["targetPort"] == "http"


def test_the_configuration_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_environment(monkeypatch)
    [toml] = _blocks(_section("### Configuration: flags, environment, TOML file"), "toml")
    _, settings = _load_proxy_config(tmp_path, toml)
    assert settings.key_headers == ("accept-language",) and settings.l1_max_bytes == 128 * 1024**2
