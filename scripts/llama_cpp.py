#!/usr/bin/env python3
"""A real llama.cpp runtime for tests, built here because no container registry is reachable.

Subcommands (each idempotent; all results are cached and reused):

    build      llama.cpp from the ``llama-cpp-python`` sdist on PyPI (it vendors llama.cpp)
               -> ~/.cache/slm-fleet/llama.cpp-<version>/{bin/, convert_hf_to_gguf.py, gguf-py/,
                  conversion/, requirements/} (the tools path of quantize jobs)
    image      Docker image slm-fleet/llama-server:<version> (+ :local): busybox-static,
               /app/llama-server and the shared libraries it needs, ``docker import``-ed
    tiny-gguf  the project's tiny Llama test model as GGUF F16 (+ Q8_0)
               -> ~/.cache/slm-fleet/tiny-llama-f16.gguf, tiny-llama-q8_0.gguf
    all        the three above

Standard library only (the Docker CLI for the image); the tiny model is built by
``tests.hubserver.tinymodel`` with the project's venv. ``SLM_FLEET_CACHE`` moves the cache.
See docs/llama-cpp-local.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

VERSION = "0.3.36"  # llama-cpp-python on PyPI; its sdist vendors llama.cpp
TARGETS = ("llama-server", "llama-quantize", "llama-perplexity", "llama-imatrix", "llama-cli")
REQUIRED_TARGETS = ("llama-server", "llama-quantize")
CMAKE_FLAGS = (
    "-G",
    "Ninja",
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # otherwise it downloads the web UI
    "-DLLAMA_OPENSSL=OFF",
)
IMAGE_REPOSITORY = "slm-fleet/llama-server"
LOCAL_TAG = f"{IMAGE_REPOSITORY}:local"
# As in llama.cpp's .devops/cpu.Dockerfile, target "server" (ghcr.io/ggml-org/llama.cpp:server).
ENTRYPOINT = "/app/llama-server"
WORKDIR = "/app"
IMAGE_ENV = {"LLAMA_ARG_HOST": "0.0.0.0", "PATH": "/app:/bin"}  # noqa: S104 - as upstream
BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "ls", "cat", "wget", "sleep")
LABEL_VERSION = "org.opencontainers.image.version"
LABEL_BINARY = "io.slm-fleet.llama-server.sha256"
REPO_ROOT = Path(__file__).resolve().parent.parent

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """A step failed; the message ends with the tail of its log."""


def _print(message: str) -> None:
    print(f"[llama_cpp] {message}", flush=True)


def cache_root() -> Path:
    """The same root as tests/hubserver/tinymodel.py uses."""
    return Path(os.environ.get("SLM_FLEET_CACHE", Path.home() / ".cache" / "slm-fleet"))


def tools_dir(version: str = VERSION) -> Path:
    return cache_root() / f"llama.cpp-{version}"


def image_tag(version: str = VERSION) -> str:
    return f"{IMAGE_REPOSITORY}:{version}"


def project_python() -> str:
    """The project's venv interpreter (torch, transformers, ...), else this one."""
    override = os.environ.get("SLM_FLEET_PYTHON")
    if override:
        return override
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.is_file() else sys.executable


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _run(cmd: Sequence[str], log_file: Path, log: Log, **kwargs) -> None:
    """Run a command, appending its output to ``log_file``; BuildError with the tail if it fails."""
    with log_file.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(map(str, cmd))}\n")
        out.flush()
        result = subprocess.run(  # noqa: S603 - fixed argument lists, no shell
            [str(part) for part in cmd], stdout=out, stderr=subprocess.STDOUT, check=False, **kwargs
        )
    if result.returncode != 0:
        raise BuildError(
            f"`{' '.join(map(str, cmd))}` exited with {result.returncode}; "
            f"last lines of {log_file}:\n{_tail(log_file)}"
        )


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """An exclusive lock across processes (two test sessions building at once)."""
    cache_root().mkdir(parents=True, exist_ok=True)
    with (cache_root() / f".{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- build ----------------------------------------------------------------------------------


def is_built(directory: Path) -> bool:
    return (directory / "VERSION").is_file() and all(
        (directory / "bin" / name).is_file() for name in REQUIRED_TARGETS
    )


def _build_tools(work: Path, log_file: Path, log: Log) -> tuple[str, str]:
    """cmake and ninja: the system's when present, else pip's wheels in a build-only venv."""
    cmake, ninja = shutil.which("cmake"), shutil.which("ninja")
    if cmake and ninja:
        return cmake, ninja
    venv = cache_root() / "build-tools-venv"
    if not (venv / "bin" / "ninja").is_file() or not (venv / "bin" / "cmake").is_file():
        log(f"cmake/ninja missing: installing them from PyPI into {venv}")
        _run([sys.executable, "-m", "venv", venv], log_file, log)
        _run(
            [venv / "bin" / "python", "-m", "pip", "install", "-q", "cmake", "ninja"], log_file, log
        )
    return str(venv / "bin" / "cmake"), str(venv / "bin" / "ninja")


def _extract(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # pragma: no cover - Python < 3.11.4
            tar.extractall(into)  # noqa: S202 - a PyPI sdist we just downloaded
    (root,) = [path for path in into.iterdir() if path.is_dir()]
    return root


def _ninja_build(cmd: Sequence[str], log_file: Path, log: Log) -> None:
    """cmake --build, logging every line and printing progress every 10 %."""
    started, shown = time.monotonic(), -10
    with log_file.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        process = subprocess.Popen(  # noqa: S603 - fixed argument list
            list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            match = re.match(r"\[(\d+)/(\d+)\]", line)
            if match:
                done, total = int(match[1]), int(match[2])
                percent = 100 * done // total
                if percent >= shown + 10:
                    shown = percent - percent % 10
                    elapsed = time.monotonic() - started
                    log(f"  compiled {done}/{total} ({percent} %) after {elapsed:.0f} s")
        code = process.wait()
    if code != 0:
        raise BuildError(
            f"the build exited with {code}; last lines of {log_file}:\n{_tail(log_file)}"
        )


def build(version: str = VERSION, jobs: int = 2, log: Log = _print) -> Path:
    """Build llama.cpp once per version; returns the cache directory (``bin/``, converter)."""
    target = tools_dir(version)
    if is_built(target):
        log(f"llama.cpp {version}: cached in {target}")
        return target
    with _lock(target.name):
        if is_built(target):  # built by another process while we waited
            return target
        if target.exists():  # not ours (only complete builds are renamed into place)
            log(f"removing the incomplete {target}")
            shutil.rmtree(target)
        for stale in cache_root().glob(f".{target.name}-*"):  # earlier interrupted builds
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_root()))
        try:
            _build_into(work, version, jobs, log)
            os.rename(work / "out", target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log(f"llama.cpp {version}: built into {target}")
    return target


def _build_into(work: Path, version: str, jobs: int, log: Log) -> None:
    started = time.monotonic()
    log_file = work / "build.log"
    for tool in ("cc", "c++"):
        if not shutil.which(tool):
            raise BuildError(f"no C/C++ compiler ({tool}): apt-get install -y build-essential")
    cmake, ninja = _build_tools(work, log_file, log)
    log(f"downloading the llama-cpp-python {version} sdist from PyPI")
    _run(
        [
            project_python(),
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            f"llama-cpp-python=={version}",
            "-d",
            work / "sdist",
        ],
        log_file,
        log,
    )
    (archive,) = (work / "sdist").glob("*.tar.gz")
    log(f"unpacking {archive.name} ({archive.stat().st_size / 1e6:.0f} MB)")
    source = _extract(archive, work / "src") / "vendor" / "llama.cpp"
    build_dir = work / "build"
    log("configuring (cmake " + " ".join(CMAKE_FLAGS) + ")")
    env = {**os.environ, "PATH": f"{Path(ninja).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    _run([cmake, "-S", source, "-B", build_dir, *CMAKE_FLAGS], log_file, log, env=env)
    available = subprocess.run(  # noqa: S603
        [ninja, "-C", str(build_dir), "-t", "targets", "all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {line.split(":", 1)[0] for line in available.splitlines()}
    targets = [name for name in TARGETS if name in names]
    skipped = sorted(set(TARGETS) - set(targets))
    if skipped:
        log(f"not in this version, skipped: {', '.join(skipped)}")
    log(f"building {' '.join(targets)} with -j{jobs} (about 5 min on 2 cores)")
    _ninja_build(
        [cmake, "--build", str(build_dir), f"-j{jobs}", "--target", *targets], log_file, log
    )
    out = work / "out"
    (out / "bin").mkdir(parents=True)
    for name in targets:
        shutil.copy2(build_dir / "bin" / name, out / "bin" / name)
        if shutil.which("strip"):
            subprocess.run(["strip", str(out / "bin" / name)], check=False)  # noqa: S603,S607
    shutil.copy2(source / "convert_hf_to_gguf.py", out / "convert_hf_to_gguf.py")
    shutil.copytree(source / "gguf-py", out / "gguf-py")
    if (source / "conversion").is_dir():  # newer converters import their `conversion` package
        shutil.copytree(source / "conversion", out / "conversion")
    if (source / "requirements").is_dir():  # what the converter needs (pip install -r)
        shutil.copytree(source / "requirements", out / "requirements")
    shutil.copy2(source / "LICENSE", out / "LICENSE")
    shutil.copy2(log_file, out / "build.log")
    commit = re.search(r"ggml commit:\s*(\S+)", log_file.read_text(errors="replace"))
    info = {
        "llama_cpp_python": version,
        "ggml_commit": commit[1] if commit else None,
        "targets": targets,
        "cmake_flags": list(CMAKE_FLAGS),
        "build_seconds": round(time.monotonic() - started),
    }
    (out / "VERSION").write_text(f"{version}\n{json.dumps(info, indent=2)}\n")


# --- image ----------------------------------------------------------------------------------


def _docker(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        ["docker", *args],  # noqa: S607 - the Docker CLI from PATH
        capture_output=True,
        text=True,
        check=False,
        **kwargs,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _ensure_busybox(log: Log) -> Path:
    if not BUSYBOX.is_file():
        log("installing Debian's busybox-static")
        for cmd in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "busybox-static"],
        ):
            subprocess.run(cmd, check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})  # noqa: S603
    if _needed_libraries(BUSYBOX):
        raise BuildError(f"{BUSYBOX} is not statically linked: apt-get install -y busybox-static")
    return BUSYBOX


def _needed_libraries(binary: Path) -> list[str]:
    """Absolute paths ``ldd`` lists (the dynamic loader included); [] for a static binary."""
    result = subprocess.run(  # noqa: S603
        ["ldd", str(binary)],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 and "not a dynamic executable" in result.stdout + result.stderr:
        return []
    if result.returncode != 0:
        raise BuildError(f"ldd {binary} failed: {result.stdout}{result.stderr}")
    paths = []
    for line in result.stdout.splitlines():
        if "not found" in line:
            raise BuildError(f"{binary} needs a library that is missing here: {line.strip()}")
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            paths.append(match[1])
    return paths


def _rootfs_tar(server: Path, log: Log) -> bytes:
    """The image's file system as a tar stream, every entry owned by root."""
    buffer = io.BytesIO()

    def directory(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, mode
        tar.addfile(info)

    def regular(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))

    libraries = _needed_libraries(server)
    log(f"shared libraries of llama-server: {' '.join(libraries)}")
    made: set[str] = set()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in (("bin", 0o755), ("app", 0o755), ("etc", 0o755), ("tmp", 0o1777)):
            directory(tar, name, mode)
            made.add(name)
        directory(tar, "models")
        regular(tar, "bin/busybox", _ensure_busybox(log).read_bytes(), 0o755)
        for applet in APPLETS:  # not `busybox` itself
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(link)
        regular(
            tar,
            "etc/passwd",
            b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
            0o644,
        )
        regular(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
        regular(tar, ENTRYPOINT.lstrip("/"), server.read_bytes(), 0o755)
        for library in libraries:  # at the path ldd gives, symbolic links resolved
            parts = Path(library).parts[1:]
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent not in made:
                    directory(tar, parent)
                    made.add(parent)
            regular(tar, "/".join(parts), Path(library).resolve().read_bytes(), 0o755)
    return buffer.getvalue()


def image(version: str = VERSION, log: Log = _print) -> str:
    """Import ``slm-fleet/llama-server:<version>`` (and ``:local``); returns the versioned tag."""
    tools = tools_dir(version)
    if not is_built(tools):
        raise BuildError(f"llama.cpp {version} is not built yet: run `{Path(__file__).name} build`")
    server = tools / "bin" / "llama-server"
    digest, tag = _sha256(server), image_tag(version)
    version_check = _docker("version", "--format", "{{.Server.APIVersion}}")
    if version_check.returncode != 0:
        raise BuildError(f"the Docker engine is not reachable: {version_check.stderr.strip()}")
    found = _docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag)
    labels = (json.loads(found.stdout or "null") or {}) if found.returncode == 0 else {}
    if labels.get(LABEL_VERSION) == version and labels.get(LABEL_BINARY) == digest:
        _docker("tag", tag, LOCAL_TAG)
        log(f"image {tag}: present")
        return tag
    started = time.monotonic()
    data = _rootfs_tar(server, log)
    changes = [
        f"ENTRYPOINT {json.dumps([ENTRYPOINT])}",
        f"WORKDIR {WORKDIR}",
        *(f"ENV {key}={value}" for key, value in IMAGE_ENV.items()),
        f"LABEL {LABEL_VERSION}={version}",
        f"LABEL {LABEL_BINARY}={digest}",
        'LABEL org.opencontainers.image.title="llama.cpp server (slm-fleet local build)"',
        "LABEL org.opencontainers.image.source=https://github.com/ggml-org/llama.cpp",
    ]
    cmd = ["import", *(arg for change in changes for arg in ("--change", change))]
    cmd += ["--message", f"llama-server from llama-cpp-python {version}", "-", tag]
    result = subprocess.run(  # noqa: S603
        ["docker", *cmd],  # noqa: S607
        input=data,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"docker import failed: {result.stderr.decode(errors='replace')}")
    tagged = _docker("tag", tag, LOCAL_TAG)
    if tagged.returncode != 0:
        raise BuildError(f"docker tag failed: {tagged.stderr}")
    size = _docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()
    log(
        f"image {tag} (+ {LOCAL_TAG}): {int(size or 0) / 1e6:.1f} MB, "
        f"imported in {time.monotonic() - started:.1f} s"
    )
    return tag


# --- tiny GGUF ------------------------------------------------------------------------------


def tiny_model_dir() -> Path:
    """The project's tiny Llama (tests/hubserver/tinymodel.py), built with the venv's torch."""
    if importlib.util.find_spec("torch") is not None:
        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))
        from tests.hubserver.tinymodel import tiny_llama

        return tiny_llama()
    code = "from tests.hubserver.tinymodel import tiny_llama; print(tiny_llama())"
    result = subprocess.run(  # noqa: S603
        [project_python(), "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BuildError(f"building the tiny model failed:\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def tiny_gguf_paths() -> dict[str, Path]:
    return {
        "F16": cache_root() / "tiny-llama-f16.gguf",
        "Q8_0": cache_root() / "tiny-llama-q8_0.gguf",
    }


def tiny_gguf(
    model_dir: Path | None = None, version: str = VERSION, log: Log = _print
) -> dict[str, Path]:
    """The tiny model as GGUF F16 (official converter) and Q8_0 (llama-quantize)."""
    tools = tools_dir(version)
    if not is_built(tools):
        raise BuildError(f"llama.cpp {version} is not built yet: run `{Path(__file__).name} build`")
    model_dir = Path(model_dir) if model_dir else tiny_model_dir()
    paths = tiny_gguf_paths()
    stamp = cache_root() / "tiny-llama-gguf.source"
    source = json.dumps({"model": model_dir.name, "llama.cpp": version})
    with _lock("tiny-llama-gguf"):
        current = stamp.read_text() if stamp.is_file() else ""
        if current == source and all(path.is_file() for path in paths.values()):
            log(f"tiny GGUF: cached ({paths['F16']})")
            return paths
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=".tiny-gguf-", dir=cache_root()) as scratch:
            log_file = Path(scratch) / "convert.log"
            f16, q8 = Path(scratch) / "f16.gguf", Path(scratch) / "q8_0.gguf"
            env = {**os.environ, "PYTHONPATH": str(tools / "gguf-py")}
            log(f"converting {model_dir} to GGUF F16")
            _run(
                [
                    project_python(),
                    tools / "convert_hf_to_gguf.py",
                    model_dir,
                    "--outtype",
                    "f16",
                    "--outfile",
                    f16,
                ],
                log_file,
                log,
                env=env,
            )
            log("quantizing to Q8_0 with llama-quantize")
            _run([tools / "bin" / "llama-quantize", f16, q8, "Q8_0"], log_file, log)
            os.replace(f16, paths["F16"])
            os.replace(q8, paths["Q8_0"])
            stamp.write_text(source)
        log(f"tiny GGUF written in {time.monotonic() - started:.1f} s")
    for kind, path in paths.items():
        log(f"  {kind}: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return paths


# --- CLI ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("command", choices=("build", "image", "tiny-gguf", "all"))
    parser.add_argument("--version", default=VERSION, help=f"llama-cpp-python (default {VERSION})")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.command in ("build", "all"):
            build(args.version, args.jobs)
        if args.command in ("image", "all"):
            print(image(args.version), flush=True)
        if args.command in ("tiny-gguf", "all"):
            for path in tiny_gguf(version=args.version).values():
                print(path, flush=True)
    except BuildError as exc:
        _print(f"FAILED: {exc}")
        return 1
    _print(f"{args.command}: done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
