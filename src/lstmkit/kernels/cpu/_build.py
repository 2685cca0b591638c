"""Compile the CPU kernels on first use and keep the build.

The extension is one C++ file (``ops.cpp`` with its headers) that registers ``torch.ops.
lstmkit_cpu``. It is compiled with ``torch.utils.cpp_extension.load`` for the machine it runs
on (``-march=native``), into ``$TORCH_EXTENSIONS_DIR/lstmkit_cpu-<key>`` (torch's default root,
``~/.cache/torch_extensions``, when the variable is unset). The key covers the sources, the
versions of torch and Python, the CPU and the sources' own folder, so an edit, an upgrade, a
home directory shared with another kind of CPU, or another checkout (torch's build.ninja names
the source path, so two checkouts sharing one folder would rebuild each other's) gets a build of
its own instead of a stale or illegal one. A first build takes 20-40 s on two cores; later
processes only load it.

Builds of one folder take turns under an advisory lock (``flock``) that the system releases when
its holder dies, so a process killed mid-build cannot leave the folder locked: torch's own lock
file, which a killed build leaves behind and every later process would wait on forever, is
removed under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import platform
import shutil
import sys
from pathlib import Path

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
_SOURCES = ("ops.cpp", "matmul.h", "common.h", "lstm.h", "lstm_backward.h", "gru.h", "rnn.h")
# -fno-trapping-math and -fno-math-errno (as torch's own build) let floor and sqrt vectorise.
_FLAGS = ["-O3", "-march=native", "-fno-trapping-math", "-fno-math-errno", "-fopenmp"]


def problem() -> str | None:
    """Why this machine cannot build the kernels (no compiler, no ninja), or None."""
    if not sys.platform.startswith("linux"):
        return f"builds on Linux only, got {sys.platform}"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return (f"needs a C++ compiler to build on first use, found no {compiler!r} "
                "(install g++, or set CXX)")
    if _ninja_dir() is None:
        return "needs ninja to build on first use (pip install ninja)"
    return None


def _ninja_dir() -> str | None:
    found = shutil.which("ninja")
    if found:
        return os.path.dirname(found)
    try:
        import ninja  # the PyPI wheel puts the binary beside the package, maybe off PATH
    except ImportError:
        return None
    return ninja.BIN_DIR


def _cpu_identity() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [line for line in text.splitlines()
            if line.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
    return "\n".join(sorted(set(keep)))


def build_directory() -> Path:
    """Where this machine's build lives."""
    import torch
    from torch.utils.cpp_extension import get_default_build_root

    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update((_HERE / name).read_bytes())
    for part in (torch.__version__, sys.version, " ".join(_FLAGS), _cpu_identity(),
                 str(_HERE.resolve())):
        digest.update(part.encode())
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    return Path(root) / f"lstmkit_cpu-{digest.hexdigest()[:16]}"


@functools.cache
def ops():
    """``torch.ops.lstmkit_cpu``, built first if this machine has no build yet (seconds)."""
    import torch
    from torch.utils.cpp_extension import load

    reason = problem()
    if reason is not None:
        raise RuntimeError(f"the cpu backend {reason}; backend='reference' runs without it")
    directory = build_directory()
    directory.mkdir(parents=True, exist_ok=True)
    path = os.environ.get("PATH", "")
    ninja_dir = _ninja_dir()
    if ninja_dir not in path.split(os.pathsep):
        os.environ["PATH"] = ninja_dir + os.pathsep + path
    if not (directory / "lstmkit_cpu.so").exists():
        log.info("building the cpu kernels in %s (first use on this machine: about half a "
                 "minute)", directory)
    log.debug("loading the cpu kernels from %s", directory)
    try:
        with _exclusive(directory):
            load(name="lstmkit_cpu", sources=[str(_HERE / "ops.cpp")], extra_cflags=_FLAGS,
                 extra_ldflags=["-fopenmp"], build_directory=str(directory),
                 is_python_module=False, verbose=log.isEnabledFor(logging.DEBUG))
    except (RuntimeError, OSError) as error:
        raise RuntimeError(f"the cpu backend failed to build in {directory}: {error}; "
                           "backend='reference' runs without it") from error
    return torch.ops.lstmkit_cpu


@contextlib.contextmanager
def _exclusive(directory: Path):
    """Hold the build folder's advisory lock; inside it no other lstmkit process builds there,
    so a torch lock file found in the folder was left by a killed build and is removed."""
    with open(directory / ".lstmkit-build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            stale = directory / "lock"
            if stale.exists():
                log.warning("removing %s, left by a build that did not finish", stale)
                stale.unlink()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
