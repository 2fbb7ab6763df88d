#!/usr/bin/env python3
"""Build the harness's OCI images with podman, push them to a registry and record their digests.

    python images/build.py build --registry 127.0.0.1:16500/gpu-serving-harness --lock STATE/images.json
    python images/build.py plan  --registry ... --lock ...     # what would be built, nothing changes

Only what changed is built: an image's content hash covers its Containerfile, the files it copies, its build
args and its parent's hash. An image whose hash matches the lock file and whose tag the registry still
serves is left alone. The last line of stdout is one JSON object (`changed`, `built`, `pushed`, `images`);
progress goes to stderr and each build streams into its own log under --log-dir.

podman reads the project's builder configuration from CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and
CONTAINERS_REGISTRIES_CONF (written by roles/images); this script refuses to run without them so the host's
own podman configuration is never used by accident.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "images" / "images.yml"
# Bumped when the way the base root filesystem is made changes, so old cached tarballs are not reused.
BASE_RECIPE = "debootstrap-v2"
LOCAL_PREFIX = "localhost/gpu-serving-harness"
REQUIRED_ENV = ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF", "REGISTRY_AUTH_FILE")
T0 = time.monotonic()


class BuildError(Exception):
    pass


def say(msg: str) -> None:
    print(f"[images {time.monotonic() - T0:6.0f}s] {msg}", file=sys.stderr, flush=True)


@dataclass
class Image:
    name: str
    parent: str
    context: list[str]
    push: bool = True
    optional: bool = False
    binaries: list[dict] = field(default_factory=list)
    # The project's own Go commands, compiled from the repository into bin/ of the build context:
    # {dir: <module directory in the repo>, binary: <name>}. Their source is in `context`, so it is hashed.
    go_build: list[dict] = field(default_factory=list)
    content_hash: str = ""


def load_spec(path: Path = SPEC) -> tuple[dict, list[Image]]:
    raw = yaml.safe_load(path.read_text())
    images = []
    names = {"base"}
    for entry in raw["images"]:
        img = Image(
            name=entry["name"], parent=entry["from"], context=list(entry["context"]),
            push=entry.get("push", True), optional=entry.get("optional", False),
            binaries=list(entry.get("binaries", [])), go_build=list(entry.get("go_build", [])),
        )
        for g in img.go_build:
            if not any(g.get("dir") == c or str(g.get("dir", "")).startswith(c.rstrip("/") + "/") for c in img.context):
                raise BuildError(f"images.yml: {img.name} compiles {g.get('dir')!r}, which is not in its context "
                                 "(the source must be hashed)")
        if img.parent not in names:
            raise BuildError(f"images.yml: {img.name} is built from {img.parent!r}, which is not defined before it")
        if not (REPO / "images" / img.name / "Containerfile").is_file():
            raise BuildError(f"images.yml: {img.name} has no images/{img.name}/Containerfile")
        names.add(img.name)
        images.append(img)
    return raw["base"], images


def component_versions() -> dict[str, str]:
    """Go component versions, read from the role that builds them (one place)."""
    defaults = yaml.safe_load((REPO / "roles/local_cluster/defaults/main.yml").read_text())
    prefix, suffix = "local_cluster_", "_version"
    return {k[len(prefix):-len(suffix)]: str(v) for k, v in defaults.items()
            if k.startswith(prefix) and k.endswith(suffix)}


def iter_files(rel: str):
    p = REPO / rel
    if not p.exists():
        raise BuildError(f"{rel}: listed in images.yml but missing from the repository")
    if p.is_file():
        yield rel
        return
    for f in sorted(p.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
            yield str(f.relative_to(REPO))


def hash_image(img: Image, parent_hash: str, build_args: dict[str, str], bin_dir: Path) -> str:
    h = hashlib.sha256()
    h.update(f"parent={parent_hash}\n".encode())
    for k in sorted(build_args):
        h.update(f"arg {k}={build_args[k]}\n".encode())
    for rel in sorted({f for c in img.context for f in iter_files(c)}):
        h.update(f"file {rel}\n".encode())
        h.update(hashlib.sha256((REPO / rel).read_bytes()).digest())
    for b in binary_paths(img, bin_dir):
        h.update(f"binary {b.name}\n".encode())
        h.update(hashlib.sha256(b.read_bytes()).digest())
    return h.hexdigest()


def binary_paths(img: Image, bin_dir: Path) -> list[Path]:
    versions = component_versions()
    out = []
    for b in img.binaries:
        path = bin_dir / b["dir"].format(**versions) / b["file"]
        if not path.is_file():
            raise BuildError(
                f"{img.name}: needs {path}, built by roles/local_cluster/files/build-binaries.sh "
                "(scripts/bootstrap.sh runs it); it is not there yet"
            )
        out.append(path)
    return out


def run(argv: list[str], log=None, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    if log is not None:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        r = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, text=True)
    else:
        r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        detail = "" if log is not None else (r.stderr or r.stdout)[-2000:]
        where = f" (output in {log.name})" if log is not None else ""
        raise BuildError(f"{' '.join(argv[:3])} ... failed with status {r.returncode}{where}: {detail}")
    return r


def image_exists(ref: str) -> bool:
    return run(["podman", "image", "exists", ref], check=False).returncode == 0


def remote_digest(ref: str, tls_verify: bool) -> str | None:
    r = run(["skopeo", "inspect", f"--tls-verify={str(tls_verify).lower()}", "--format", "{{.Digest}}",
             f"docker://{ref}"], check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def base_hash(base: dict, base_ref: str) -> str:
    if base_ref != "debootstrap":
        return hashlib.sha256(f"pulled {base_ref}".encode()).hexdigest()
    return hashlib.sha256(json.dumps({"recipe": BASE_RECIPE, **base}, sort_keys=True).encode()).hexdigest()


def ensure_base(base: dict, base_ref: str, cache: Path, log_dir: Path) -> tuple[str, bool]:
    """The base image's local reference; debootstrap and import it once per content hash."""
    if base_ref != "debootstrap":
        if not image_exists(base_ref):
            say(f"pulling the base {base_ref}")
            run(["podman", "pull", base_ref])
            return base_ref, True
        return base_ref, False
    h = base_hash(base, base_ref)
    tag = f"{LOCAL_PREFIX}/base:{h[:16]}"
    if image_exists(tag):
        return tag, False
    tarball = cache / f"base-{h[:16]}.tar"
    with (log_dir / "base.log").open("w") as log:
        if not tarball.exists():
            root = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
            try:
                say(f"debootstrap {base['suite']} ({base['variant']}) into {root}; log: {log.name}")
                t = time.monotonic()
                run(["debootstrap", f"--variant={base['variant']}", f"--include={','.join(base['include'])}",
                     base["suite"], str(root), base["mirror"]], log=log)
                # Package lists and caches are rebuilt by the layers that install packages; docs and locales are
                # dead weight in a container. The resolved package versions stay recorded in the image.
                versions = run(["chroot", str(root), "dpkg-query", "-W", "-f", "${Package}=${Version}\n"],
                               capture=True).stdout
                # debootstrap leaves only the release suite; pinned versions of later layers come from the
                # point-release updates and security suites too (as on the host).
                (root / "etc/apt/sources.list").write_text(
                    f"deb {base['mirror']} {base['suite']} main\n"
                    f"deb {base['mirror']} {base['suite']}-updates main\n"
                    f"deb {base['security_mirror']} {base['suite']}-security main\n")
                manifest = root / "usr/share/gpu-serving-harness/base-packages.txt"
                manifest.parent.mkdir(parents=True, exist_ok=True)
                manifest.write_text(versions)
                for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                             "usr/share/locale", "usr/share/info", "var/log"):
                    target = root / junk
                    if target.is_dir():
                        for child in target.iterdir():
                            if child.is_dir() and not child.is_symlink():
                                shutil.rmtree(child)
                            elif child.name != "lock":
                                child.unlink()
                partial = tarball.with_suffix(".partial")
                with tarfile.open(partial, "w") as tar:
                    tar.add(root, arcname=".", filter=lambda ti: None if ti.name.startswith("./dev/") else ti)
                partial.rename(tarball)
                say(f"base root filesystem ready: {tarball} ({time.monotonic() - t:.0f}s)")
            finally:
                shutil.rmtree(root, ignore_errors=True)
        say(f"importing {tarball.name} as {tag}")
        run(["podman", "import",
             "--change", "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "--change",
             f"LABEL=org.opencontainers.image.base.name=debian:{base['suite']}-debootstrap-{base['variant']}",
             str(tarball), tag], log=log)
    return tag, True


def stage_context(img: Image, dest: Path, bin_dir: Path) -> None:
    """Only the listed inputs go into the build context: what is hashed is exactly what is sent."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for c in img.context:
        for rel in iter_files(c):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, target)
    for b in binary_paths(img, bin_dir):
        (dest / "bin").mkdir(exist_ok=True)
        shutil.copy2(b, dest / "bin" / b.name)
    for g in img.go_build:
        (dest / "bin").mkdir(exist_ok=True)
        go_build(REPO / g["dir"], dest / "bin" / g["binary"], bin_dir.parent / "go")


def go_build(module: Path, out: Path, go_cache: Path) -> None:
    """Compile a Go command of the project's own (static, no cgo), with the module and build caches the control
    plane's builds share: the first build downloads and compiles its modules, later ones take seconds."""
    go = shutil.which("go")
    if go is None:
        raise BuildError(f"{module.relative_to(REPO)}: compiling it needs Go (1.25 or later) on PATH")
    env = dict(os.environ, GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-mod=readonly -buildvcs=false",
               GOMODCACHE=str(go_cache / "mod"), GOCACHE=str(go_cache / "build"))
    say(f"go build {module.relative_to(REPO)} -> {out.name}")
    r = subprocess.run([go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(out), "."], cwd=module, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError(f"go build in {module.relative_to(REPO)} failed:\n{r.stderr[-3000:]}")


def revision() -> str:
    r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "unknown"


def build_one(img: Image, parent_ref: str, base_name: str, args: argparse.Namespace, build_args: dict[str, str],
              log_dir: Path, cache: Path) -> tuple[str, float]:
    tag = f"{LOCAL_PREFIX}/{img.name}:{img.content_hash[:16]}"
    ctx = cache / "contexts" / img.name
    stage_context(img, ctx, args.bin_dir)
    log_path = log_dir / f"{img.name}.log"
    say(f"building {img.name} from {parent_ref}; output streams to {log_path}")
    t = time.monotonic()
    argv = ["podman", "build", "--network=host", "--layers", "-f", f"images/{img.name}/Containerfile", "-t", tag,
            "--build-arg", f"BASE={parent_ref}",
            "--label", f"org.opencontainers.image.source={args.source_url}",
            "--label", f"org.opencontainers.image.revision={args.revision}",
            "--label", f"org.opencontainers.image.version={img.content_hash[:16]}",
            "--label", f"org.opencontainers.image.base.name={base_name}",
            "--label", f"org.opencontainers.image.title={img.name}"]
    for k, v in sorted(build_args.items()):
        argv += ["--build-arg", f"{k}={v}"]
    if args.pip_cache:
        # Build-time only: a volume is never committed into a layer, so the cache speeds up pip without being baked in.
        Path(args.pip_cache).mkdir(parents=True, exist_ok=True)
        argv += ["--volume", f"{args.pip_cache}:/root/.cache/pip"]
    if args.ca_bundle:
        # Build-time only, read-only: the host's CA bundle (it may trust a TLS-inspecting egress proxy) replaces
        # the image's while RUN steps download; the committed layers keep Debian's own bundle.
        argv += ["--volume", f"{args.ca_bundle}:/etc/ssl/certs/ca-certificates.crt:ro"]
    argv.append(str(ctx))
    with log_path.open("w") as log:
        run(argv, log=log)
    seconds = time.monotonic() - t
    say(f"built {img.name} in {seconds:.0f}s")
    return tag, seconds


def push_one(local_tag: str, remote_tag: str, tls_verify: bool, log_dir: Path, name: str) -> str:
    digest_file = log_dir / f"{name}.digest"
    with (log_dir / f"{name}.push.log").open("w") as log:
        run(["podman", "push", f"--tls-verify={str(tls_verify).lower()}", "--digestfile", str(digest_file),
             local_tag, f"docker://{remote_tag}"], log=log)
    return digest_file.read_text().strip()


def image_size(ref: str) -> int:
    r = run(["podman", "image", "inspect", "--format", "{{.Size}}", ref], capture=True)
    return int(r.stdout.strip())


def prune(current: dict[str, str]) -> None:
    """Untag older builds of the images just built (their content hash changed) and drop dangling layers,
    so the storage under the cache does not grow with every source change."""
    for name, tag in current.items():
        r = run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                 f"reference={LOCAL_PREFIX}/{name}"], capture=True, check=False)
        for old in r.stdout.split():
            if old != tag and old.startswith(f"{LOCAL_PREFIX}/{name}:"):
                run(["podman", "untag", old, old], check=False)
    run(["podman", "image", "prune", "--force"], check=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["build", "plan"])
    p.add_argument("--registry", required=True, help="where images go, e.g. 127.0.0.1:16500/gpu-serving-harness")
    p.add_argument("--lock", required=True, type=Path, help="JSON file recording what was pushed (hash, digest)")
    harness_cache = Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache/gpu-serving-harness"))
    p.add_argument("--cache", type=Path, default=harness_cache / "images")
    p.add_argument("--bin-dir", type=Path, default=None, help="the Go binaries (default: HARNESS_CACHE/bin)")
    p.add_argument("--log-dir", type=Path, required=True)
    p.add_argument("--base", default="debootstrap", help="'debootstrap' or an image reference to pull")
    p.add_argument("--pip-cache", default="", help="host directory mounted as pip's cache during builds")
    p.add_argument("--ca-bundle", default=os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"),
                   help="host CA bundle mounted read-only during builds ('' to use the image's own)")
    p.add_argument("--only", default="", help="comma-separated image names (default: all non-optional)")
    p.add_argument("--coqui", action="store_true",
                   help="also build the optional images (tts-coqui-worker, lipsync-worker)")
    p.add_argument("--stt-variant", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--tls-verify", choices=["true", "false"], default="true")
    p.add_argument("--no-push", action="store_true", help="build into local storage only; the lock file is left alone")
    p.add_argument("--also-tag", default="", help="push each image under this tag too (e.g. 0.1.0)")
    p.add_argument("--source-url", default="https://github.com/gpu-serving-harness/gpu-serving-harness")
    args = p.parse_args(argv)
    args.bin_dir = args.bin_dir or args.cache.parent / "bin"
    args.revision = revision()
    tls_verify = args.tls_verify == "true"
    missing = [v for v in REQUIRED_ENV if not os.environ.get(v)]
    if missing:
        print(f"build.py: {', '.join(missing)} not set: run through playbooks/images.yml (roles/images writes the "
              "builder configuration) or export them", file=sys.stderr)
        return 2
    try:
        return run_action(args, tls_verify)
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1


def run_action(args: argparse.Namespace, tls_verify: bool) -> int:
    base, images = load_spec()
    known = {i.name for i in images}
    only = {n for n in args.only.split(",") if n}
    if only - known:
        raise BuildError(f"--only names unknown images {sorted(only - known)}; known: {sorted(known)}")
    wanted = only or {i.name for i in images if args.coqui or not i.optional}
    # Parents of what is wanted are needed too.
    for img in reversed(images):
        if img.name in wanted and img.parent != "base":
            wanted.add(img.parent)
    args.cache.mkdir(parents=True, exist_ok=True)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    lock = json.loads(args.lock.read_text()) if args.lock.exists() else {}
    lock_images = lock.get("images", {}) if lock.get("registry") == args.registry else {}
    base_name = "debian:bookworm (debootstrap)" if args.base == "debootstrap" else args.base
    hashes = {"base": base_hash(base, args.base)}
    build_args = {"stt-worker": {"VARIANT": args.stt_variant}}
    for img in images:
        img.content_hash = hash_image(img, hashes[img.parent], build_args.get(img.name, {}), args.bin_dir) \
            if img.name in wanted else ""
        hashes[img.name] = img.content_hash
    # Which pushed images are stale: a different hash, or the registry lost the tag.
    todo, adopted = [], []
    for img in images:
        if img.name not in wanted:
            continue
        local_tag = f"{LOCAL_PREFIX}/{img.name}:{img.content_hash[:16]}"
        if args.no_push or not img.push:
            # Local builds only (tests, or an intermediate named with --only): stale when not in local storage.
            if (args.no_push or img.name in only) and not image_exists(local_tag):
                todo.append(img.name)
            continue
        entry = lock_images.get(img.name, {})
        remote_tag = f"{args.registry}/{img.name}:{img.content_hash[:16]}"
        digest = remote_digest(remote_tag, tls_verify)
        if entry.get("hash") == img.content_hash and digest and digest == entry.get("digest"):
            continue
        if digest:
            # The registry already has this content hash (pushed before the lock file was lost, or by another
            # machine with the same sources): record it instead of building and pushing it again.
            say(f"{img.name}: {remote_tag} already in the registry ({digest}); recording it")
            lock_images[img.name] = {"hash": img.content_hash, "tag": remote_tag, "digest": digest,
                                     "ref": f"{args.registry}/{img.name}@{digest}", **{
                                         k: entry[k] for k in ("size_bytes", "build_seconds") if k in entry}}
            adopted.append(img.name)
            continue
        todo.append(img.name)
    # Intermediate images needed by a stale image.
    needed = set(todo)
    for img in reversed(images):
        if img.name in needed and img.parent != "base":
            needed.add(img.parent)
    if args.action == "plan":
        print(json.dumps({"changed": bool(todo or adopted), "stale": todo, "adopted": adopted,
                          "hashes": {n: hashes[n][:16] for n in sorted(wanted)}}, sort_keys=True))
        return 0
    built, pushed, timings, local_refs = [], [], {}, {}
    refs = {"base": None}
    if needed:
        refs["base"], _ = ensure_base(base, args.base, args.cache, args.log_dir)
    for img in images:
        if img.name not in needed:
            continue
        tag = f"{LOCAL_PREFIX}/{img.name}:{img.content_hash[:16]}"
        if image_exists(tag):
            say(f"{img.name}: {tag} already in local storage")
        else:
            _, timings[img.name] = build_one(img, refs[img.parent], base_name, args,
                                             build_args.get(img.name, {}), args.log_dir, args.cache)
            built.append(img.name)
        refs[img.name] = tag
        if img.push and img.name in todo and not args.no_push:
            remote_tag = f"{args.registry}/{img.name}:{img.content_hash[:16]}"
            say(f"pushing {img.name} to {remote_tag}")
            digest = push_one(tag, remote_tag, tls_verify, args.log_dir, img.name)
            if args.also_tag:
                # A human-readable tag next to the content-hash one, for clusters that refer to images by tag.
                push_one(tag, f"{args.registry}/{img.name}:{args.also_tag}", tls_verify, args.log_dir,
                         f"{img.name}-{args.also_tag}")
            pushed.append(img.name)
            lock_images[img.name] = {
                "hash": img.content_hash, "tag": remote_tag, "digest": digest,
                "ref": f"{args.registry}/{img.name}@{digest}", "size_bytes": image_size(tag),
                "build_seconds": round(timings.get(img.name, 0.0), 1),
                "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        local_refs[img.name] = tag
    if built:
        prune(local_refs)
    if args.no_push:
        # Local builds: every wanted image's tag, built now or found in storage (what the tests start).
        local_refs = {i.name: f"{LOCAL_PREFIX}/{i.name}:{i.content_hash[:16]}" for i in images if i.name in wanted}
    changed = bool(built or pushed or adopted)
    if (pushed or adopted) and not args.no_push:
        lock = {"registry": args.registry, "images": dict(sorted(lock_images.items()))}
        tmp = args.lock.with_suffix(".tmp")
        tmp.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o644)
        tmp.rename(args.lock)
    summary = {
        "changed": changed, "built": built, "pushed": pushed,
        "build_seconds": {k: round(v, 1) for k, v in timings.items()},
        "adopted": adopted,
        "images": local_refs if args.no_push else {n: e["ref"] for n, e in sorted(lock_images.items()) if n in wanted},
        "sizes": {n: image_size(t) for n, t in sorted(local_refs.items())},
        "log_dir": str(args.log_dir), "lock": str(args.lock),
    }
    say(f"done: built {built or 'nothing'}, pushed {pushed or 'nothing'}")
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
