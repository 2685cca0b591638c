"""Building the extension on first use (lstmkit/kernels/cpu/_build.py): where the build goes,
what invalidates it, and what a machine that cannot build is told."""

import os
import shutil
import subprocess
import sys

import pytest

from lstmkit.kernels.cpu import _build


def test_builds_under_torch_extensions_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    directory = _build.build_directory()
    assert directory.parent == tmp_path
    assert directory.name.startswith("lstmkit_cpu-") and len(directory.name) == 12 + 16


def test_another_cpu_gets_another_build(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    here = _build.build_directory()
    monkeypatch.setattr(_build, "_cpu_identity", lambda: "model name: another CPU")
    assert _build.build_directory() != here


def test_no_compiler_says_so(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert "needs a C++ compiler" in _build.problem()
    assert "'no-such-compiler-here'" in _build.problem()


def test_no_ninja_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(_build, "_ninja_dir", lambda: None)
    assert "pip install ninja" in _build.problem()


def test_other_systems_say_linux_only(monkeypatch):
    monkeypatch.setattr(_build.sys, "platform", "darwin")
    assert "Linux only, got darwin" in _build.problem()


def test_loading_without_a_toolchain_names_the_way_out(monkeypatch):
    monkeypatch.setattr(_build, "problem", lambda: "needs a C++ compiler (test)")
    with pytest.raises(RuntimeError, match=r"needs a C\+\+ compiler \(test\); "
                                           r"backend='reference' runs without it"):
        _build.ops.__wrapped__()


def test_another_checkout_gets_another_build(monkeypatch, tmp_path):
    # torch's build.ninja names the source path: two checkouts in one folder rebuild each other
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    directories = []
    for checkout in ("a", "b"):
        sources = tmp_path / checkout
        shutil.copytree(_build._HERE, sources, ignore=shutil.ignore_patterns("__pycache__"))
        monkeypatch.setattr(_build, "_HERE", sources)
        directories.append(_build.build_directory())
    assert directories[0] != directories[1]


def test_a_lock_left_by_a_killed_build_does_not_hang_the_next_process():
    if _build.problem() is not None:
        pytest.skip(f"the cpu backend {_build.problem()}")
    _build.ops()  # the build exists; torch would still wait on its lock file first
    stale = _build.build_directory() / "lock"
    stale.touch()
    try:
        done = subprocess.run(
            [sys.executable, "-c", "from lstmkit.kernels.cpu import _build; _build.ops()"],
            env=os.environ.copy(), timeout=120, capture_output=True, text=True)
    finally:
        hung = stale.exists()
        stale.unlink(missing_ok=True)
    assert done.returncode == 0, done.stderr
    assert not hung
