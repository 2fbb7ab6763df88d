#!/usr/bin/env python3
"""Write a one-layer OCI image archive from a few local files, byte for byte the same on every run.

Why not podman: the node's two images (the pause sandbox and the test image) are a static binary or two; a
deterministic archive (fixed mtimes, sorted entries, gzip without a timestamp) has the same digest on every run,
so `ctr images import` and `skopeo copy` are skipped when nothing changed, and no builder configuration is needed.

usage: oci_image.py OUT.tar NAME TAG --file SRC:DEST[:MODE] [--link DEST:TARGET] [--entrypoint ARG ...]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import tarfile


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def layer(files: list[str], links: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()
        for dest in [f.split(":")[1] for f in files] + [lk.split(":")[0] for lk in links]:
            parts = dest.strip("/").split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for spec in sorted(files):
            src, dest, *mode = spec.split(":")
            with open(src, "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(dest.strip("/"))
            info.size, info.mode, info.mtime = len(data), int(mode[0], 8) if mode else 0o755, 0
            tar.addfile(info, io.BytesIO(data))
        for spec in sorted(links):
            dest, target = spec.split(":")
            info = tarfile.TarInfo(dest.strip("/"))
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, 0
            tar.addfile(info)
    return buf.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("name", help="image name without tag, e.g. registry.k8s.io/pause")
    p.add_argument("tag")
    p.add_argument("--file", action="append", default=[], help="SRC:DEST[:MODE]")
    p.add_argument("--link", action="append", default=[], help="DEST:TARGET (a symlink)")
    p.add_argument("--entrypoint", nargs="+", required=True)
    a = p.parse_args()

    raw = layer(a.file, a.link)
    gz = gzip.compress(raw, mtime=0)
    sha = lambda b: "sha256:" + hashlib.sha256(b).hexdigest()  # noqa: E731
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": a.entrypoint, "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [sha(raw)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(gz), "size": len(gz)}],
    }, sort_keys=True).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest), "size": len(manifest),
        "annotations": {"io.containerd.image.name": f"{a.name}:{a.tag}", "org.opencontainers.image.ref.name": a.tag},
    }]}, sort_keys=True).encode()

    with tarfile.open(a.out, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(tar, "index.json", index)
        for blob in (config, manifest, gz):
            _add(tar, "blobs/sha256/" + hashlib.sha256(blob).hexdigest(), blob)
    print(sha(manifest))


if __name__ == "__main__":
    main()
