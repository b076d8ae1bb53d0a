"""Asks the registries for the digest each image tag points to now and (with --write) records
it in config/image-digests.json, the catalog `config.image_pins.with_digest` pins images from.

    tools/pin-images            print each image's current digest beside the recorded one
    tools/pin-images --write    record them (review the diff: a digest that changed means the
                                tag was re-pushed)

Online only: the OCI distribution API (GET /v2/<name>/manifests/<tag>, the digest from the
Docker-Content-Digest header; an anonymous bearer token where the registry asks for one, as
its WWW-Authenticate header says). The digest is the multi-arch index's when the tag has one,
so the pin works on x86_64 and arm64 hosts. Offline it stops with exit status 2 and says so;
the catalog is left as it is. PIN_IMAGES_REGISTRY (tests) sends every request to one base URL.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "config" / "image-digests.json"
ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class Offline(Exception):
    pass


def split_reference(reference: str) -> tuple[str, str, str]:
    """(registry host, repository, tag): Docker Hub's defaults for a name without a host."""
    name, _, tag = reference.rpartition(":")
    first = name.split("/", 1)[0]
    if "." in first or ":" in first or first == "localhost":
        host, repository = name.split("/", 1)
    else:
        host, repository = "registry-1.docker.io", name if "/" in name else f"library/{name}"
    return host, repository, tag


def _open(request: urllib.request.Request):
    try:
        return urllib.request.urlopen(request, timeout=20)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError) as error:
        raise Offline(f"{request.full_url}: {getattr(error, 'reason', error)}") from None


def _token(challenge: str, repository: str) -> str:
    fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    query = {"service": fields.get("service", ""), "scope": fields.get("scope", f"repository:{repository}:pull")}
    with _open(urllib.request.Request(f"{fields['realm']}?{urllib.parse.urlencode(query)}")) as answer:
        body = json.load(answer)
    return body.get("token") or body["access_token"]


def current_digest(reference: str) -> str:
    host, repository, tag = split_reference(reference)
    base = os.environ.get("PIN_IMAGES_REGISTRY") or f"https://{host}"
    url = f"{base}/v2/{repository}/manifests/{tag}"
    headers = {"Accept": ACCEPT}
    for _ in range(2):
        request = urllib.request.Request(url, headers=headers, method="HEAD")
        try:
            with _open(request) as answer:
                digest = answer.headers.get("Docker-Content-Digest", "")
                if not DIGEST.match(digest):
                    raise SystemExit(f"{reference}: {host} answered no sha256 digest ({digest!r})")
                return digest
        except urllib.error.HTTPError as error:
            challenge = error.headers.get("WWW-Authenticate", "")
            if error.code != 401 or not challenge.startswith("Bearer") or "Authorization" in headers:
                raise SystemExit(f"{reference}: {host} answered HTTP {error.code} for {url}") from None
            headers["Authorization"] = f"Bearer {_token(challenge, repository)}"
    raise AssertionError("unreachable")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tools/pin-images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="record the digests in config/image-digests.json")
    args = parser.parse_args(argv)
    catalog = json.loads(CATALOG.read_text())
    today = datetime.date.today().isoformat()
    try:
        found = {reference: current_digest(reference) for reference in catalog["images"]}
    except Offline as error:
        print(f"tools/pin-images: cannot reach the registry ({error}); it needs network access to "
              "the registries. config/image-digests.json is unchanged.", file=sys.stderr)
        return 2
    for reference, digest in found.items():
        recorded = catalog["images"][reference].get("digest")
        state = "same" if recorded == digest else ("new" if recorded is None else "CHANGED (the tag was re-pushed)")
        print(f"{reference}  {digest}  {state}")
        if args.write:
            host = split_reference(reference)[0]
            catalog["images"][reference] = {
                "digest": digest,
                "source": f"{host} answered this digest for the tag on {today} (tools/pin-images)",
            }
    if args.write:
        CATALOG.write_text(json.dumps(catalog, indent=2) + "\n")
        print(f"recorded in {CATALOG.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
