"""tools/pin-images against a registry on loopback that asks for a bearer token (as Docker Hub,
quay.io and nvcr.io do), and offline; config.image_pins as the program uses it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from config import image_pins

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32


class FakeRegistry:
    def __init__(self):
        self.requests: list[tuple[str, str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, code, headers=(), body=b""):
                self.send_response(code)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self):
                fake.requests.append((self.command, self.path, self.headers.get("Authorization", "")))
                if self.path.startswith("/token?"):
                    return self._answer(200, [("Content-Type", "application/json")], b'{"token": "t0k"}')
                return self._answer(404)

            def do_HEAD(self):
                fake.requests.append((self.command, self.path, self.headers.get("Authorization", "")))
                if self.headers.get("Authorization") != "Bearer t0k":
                    realm = f"http://127.0.0.1:{fake.port}/token"
                    return self._answer(401, [("WWW-Authenticate", f'Bearer realm="{realm}",service="fake"')])
                assert "application/vnd.oci.image.index.v1+json" in self.headers["Accept"]
                return self._answer(200, [("Docker-Content-Digest", DIGEST)])

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tree(tmp_path):
    """A copy of the tool and its catalog, so --write edits the copy."""
    (tmp_path / "tools").mkdir()
    (tmp_path / "config").mkdir()
    for rel in ("tools/pin-images", "tools/pin_images.py", "config/image-digests.json"):
        shutil.copy2(ROOT / rel, tmp_path / rel)
    return tmp_path


def run(tree: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tree / "tools" / "pin-images"), *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env})


def test_records_what_the_registry_answers_with_a_token(tree):
    registry = FakeRegistry()
    try:
        result = run(tree, "--write", PIN_IMAGES_REGISTRY=f"http://127.0.0.1:{registry.port}")
    finally:
        registry.close()
    assert result.returncode == 0, result.stderr
    catalog = json.loads((tree / "config" / "image-digests.json").read_text())["images"]
    assert set(catalog) == set(image_pins.catalog())
    assert all(entry["digest"] == DIGEST for entry in catalog.values())
    assert "registry-1.docker.io answered this digest" in catalog["ubuntu:22.04"]["source"]
    assert "CHANGED" in result.stdout  # prometheus's recorded digest differs from the fake's
    paths = [path for method, path, auth in registry.requests if method == "HEAD" and auth]
    assert "/v2/library/ubuntu/manifests/22.04" in paths  # Docker Hub's library/ prefix
    assert "/v2/nvidia/k8s/dcgm-exporter/manifests/4.5.3-4.8.2-distroless" in paths


def test_offline_it_says_so_and_changes_nothing(tree):
    before = (tree / "config" / "image-digests.json").read_text()
    result = run(tree, "--write", PIN_IMAGES_REGISTRY="http://127.0.0.1:9")
    assert result.returncode == 2
    assert "needs network access to the registries" in result.stderr and "unchanged" in result.stderr
    assert (tree / "config" / "image-digests.json").read_text() == before


def test_every_recorded_pin_has_a_digest_and_a_source_or_a_reason():
    for reference, entry in image_pins.catalog().items():
        if entry["digest"]:
            assert entry["digest"].startswith("sha256:") and len(entry["digest"]) == 71 and entry["source"], reference
            assert image_pins.with_digest(reference) == f"{reference}@{entry['digest']}"
        else:
            assert entry["why"] and image_pins.with_digest(reference) == reference, reference
    assert image_pins.with_digest("example.com/other:1") == "example.com/other:1"


def test_the_program_pulls_by_digest_where_one_is_verified(program):
    from tests.harness import stack_config

    run = program(stack_config("prod"), stack="prod")
    names = {r.plain["name"] for r in run.of_type("docker:index/remoteImage:RemoteImage")}
    assert "prom/prometheus:v3.14.0@" + image_pins.digest_of("prom/prometheus:v3.14.0") in names
    assert "grafana/grafana:13.2.0@" + image_pins.digest_of("grafana/grafana:13.2.0") in names
    for name in names:  # every image the program pulls is in the catalog, pinned or with a reason
        assert name.split("@", 1)[0] in image_pins.catalog(), name


def test_the_plan_says_which_images_are_tag_only(program):
    from plan.__main__ import _image_pins
    from tests.harness import stack_config

    note = _image_pins(program(stack_config("dev"), stack="dev"))
    pinned, loose = note.split("; by tag only", 1)
    assert "prom/prometheus:v3.14.0" in pinned and "grafana/grafana:13.2.0" in pinned
    for reference, entry in image_pins.catalog().items():
        if entry["digest"] is None and reference != "certbot/certbot:v5.8.0":  # dev: no letsencrypt
            assert reference in loose, reference
    assert "prom/prometheus" not in loose
