"""The component-sweep kernel (:mod:`wsol_lightning.metrics.sweeps`), compiled two ways.

* just in time (numba, cached on disk, ``nogil``): the default, and what the
  metric threads of training use (they need the GIL released);
* ahead of time: the same functions built once with ``numba.pycc`` into an
  extension module cached next to numba's own cache (``__pycache__``, else
  ``~/.cache/wsol_lightning``), keyed by the kernel's source, the numba,
  numpy and Python versions and the processor's instruction set level
  (:func:`target_cpu`). Importing it takes a millisecond and no numba,
  where ``import numba`` plus loading the cached JIT kernel take ~0.4 s: that
  is most of a whole ``evaluate.py`` run on 1000 smooth maps. The first use
  builds it (~20 s of CPU, a C compiler needed); if that fails, the JIT kernel is used.
  Finding it costs no more imports than it needs (no hashlib, importlib.metadata,
  tempfile): ``evaluate.py`` pays its start-up on every run.

Processes that start together on a fresh install (DDP ranks, ``tune.py --workers``,
parallel tests) compile each form once between them: the first takes a file lock
next to the cache and compiles, the others wait for it and load what it wrote.

Without numba at all, :func:`kernel` returns None and the box metrics fall back
to one OpenCV contour search per level (same numbers, slower).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import os
import sys
import threading
import warnings
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

_MODULE_DIR = Path(__file__).resolve().parent
_SOURCE = _MODULE_DIR / "sweeps.py"

#: Rows of the kernel's workspace arrays (int32, int64 and bool, one column per framed pixel); the
#: kernel checks them (its row indices are in :mod:`~wsol_lightning.metrics.sweeps`).
NUM_INT32, NUM_INT64, NUM_BOOL = 19, 1, 3

_WORKSPACE = "i4[:, ::1], i8[:, ::1], i2[::1], u1[::1], b1[:, ::1], f8[:, ::1], i4[::1]"
#: Exported name -> signature (the ahead-of-time module has one function per argument type).
SIGNATURES = {
    "level_sweeps": f"Tuple((f8[:], i8[:], f8[:], i8[:]))(u1[:, ::1], i8[::1], i8[:, ::1], b1, f8, i8, "
                    f"{_WORKSPACE})",
    "scoremap_best_ious_f4": f"f8[:](f4[:, ::1], f8[::1], i8[:, ::1], f8, {_WORKSPACE})",
    "scoremap_best_ious_f8": f"f8[:](f8[:, ::1], f8[::1], i8[:, ::1], f8, {_WORKSPACE})",
}

_state = {"aot": None, "aot_tried": False, "aot_error": None, "jit": None, "use_aot": False}
#: Lock files (in the first of :func:`_cache_dirs` where one can be opened): one process compiles the JIT
#: kernel (or builds the ahead-of-time module) while the others wait. Not ``_sweeps_aot_*``: a build
#: removes those of other keys.
JIT_LOCK, AOT_LOCK = "sweeps_jit.lock", "sweeps_aot_build.lock"
_THREAD_LOCK = threading.Lock()


#: /proc/cpuinfo flags of the x86-64 instruction set levels (LLVM's CPU names ``x86-64-v2`` .. ``-v4``).
X86_64_V2 = frozenset({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"})
X86_64_V3 = X86_64_V2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
X86_64_V4 = X86_64_V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


def target_cpu(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU the ahead-of-time module is built for: the highest x86-64 level whose instructions this
    processor has (``x86-64-v4``: AVX-512; ``x86-64-v3``: AVX2, BMI, FMA; ``x86-64-v2``: SSE4.2, POPCNT),
    else ``""``, numba.pycc's portable baseline (other processors, no readable ``cpuinfo``).

    numba's JIT builds for the host; numba.pycc, for the baseline, ran the kernel 10-15 % slower on smooth
    maps (measured 2026-12-08 here, an AVX-512 machine: 0.309 ms a map just in time, ahead of time 0.316
    for x86-64-v4, 0.343 for v3, 0.409 for the baseline). The level is part of the module's name, so
    machines that share a cache folder (a cluster's home directory) each load only a build their
    processor runs.
    """
    if os.uname().machine != "x86_64":
        return ""
    try:
        with open(cpuinfo) as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return ""
    have = set(flags)
    if X86_64_V4 <= have:
        return "x86-64-v4"
    if X86_64_V3 <= have:
        return "x86-64-v3"
    if X86_64_V2 <= have:
        return "x86-64-v2"
    return ""


def _numba_version() -> str:
    """numba's version from its distribution's folder name, without importing numba or importlib.metadata
    (~10 ms at every ``evaluate.py`` start); importlib.metadata where the folder is not found."""
    spec = importlib.util.find_spec("numba")
    if spec is not None and spec.origin:
        try:
            for entry in os.scandir(Path(spec.origin).parent.parent):
                if entry.name.startswith("numba-") and entry.name.endswith(".dist-info"):
                    return entry.name[len("numba-"):-len(".dist-info")]
        except OSError:
            pass
    try:
        from importlib.metadata import version

        return version("numba")
    except Exception:  # pragma: no cover - numba missing, or without metadata
        return "?"


def _versions_key() -> str:
    """What the built module depends on: the kernel's source and the toolchain's versions, as 16 hex digits
    (two 32-bit checksums: they tell builds apart, nothing here needs a cryptographic hash)."""
    import numpy

    text = _SOURCE.read_bytes() + repr(sorted(SIGNATURES.items())).encode()
    text += f"{_numba_version()} {numpy.__version__} {sys.version} {os.uname().machine}".encode()
    return f"{zlib.crc32(text):08x}{zlib.adler32(text):08x}"


def _cache_dirs():
    yield _MODULE_DIR / "__pycache__"
    yield Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wsol_lightning"


@contextlib.contextmanager
def _exclusive(name: str) -> Iterator[None]:
    """Hold the file lock ``name`` (:data:`JIT_LOCK`, :data:`AOT_LOCK`) against other processes (and this
    process's other threads); without ``fcntl`` or a writable cache folder, no lock (each process compiles)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    handle = None
    for directory in _cache_dirs():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            handle = open(directory / name, "a")
            break
        except OSError:
            continue
    if handle is None:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        yield


#: The last part of a module's name: its CPU level (:func:`_module_name`).
CPU_LEVEL_TAGS = ("v4", "v3", "v2", "baseline")


def _module_name() -> str:
    """``_sweeps_aot_<key>_<cpu level>``: a build removes the earlier ones of its own CPU level only."""
    return f"_sweeps_aot_{_versions_key()}_{(target_cpu() or 'baseline').replace('-', '_')}"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(directory: Path, name: str) -> Path:
    """Compile the kernel with ``numba.pycc`` into ``directory/name<suffix>`` (atomic rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba.pycc is pending deprecation; the JIT path stays the fallback
        from numba.pycc import CC

        import tempfile

        from wsol_lightning.metrics import sweeps

        functions = {"level_sweeps": sweeps.level_sweeps, "scoremap_best_ious_f4": sweeps.scoremap_best_ious,
                     "scoremap_best_ious_f8": sweeps.scoremap_best_ious}
        with tempfile.TemporaryDirectory(dir=directory) as scratch:
            cc = CC(name)
            cc.output_dir = scratch
            cc.verbose = False
            cc.target_cpu = target_cpu()
            for exported, signature in SIGNATURES.items():
                cc.export(exported, signature)(functions[exported].py_func)
            cc.compile()
            built = Path(scratch) / cc.output_file
            target = directory / cc.output_file
            os.replace(built, target)  # atomic: a concurrent build or reader never sees half a file
    remove_stale_builds(directory, target.name)
    return target


def remove_stale_builds(directory: Path, keep: str) -> None:
    """Remove the builds in ``directory`` that ``keep`` (a module's file name) replaces: those of other
    versions of the kernel for its CPU level, and those named before the level was part of the name. The
    builds for other levels stay (another machine sharing the folder may load them)."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    level = keep[:-len(suffix)].rsplit("_", 1)[1]
    for stale in directory.glob(f"_sweeps_aot_*{suffix}"):
        tag = stale.name[:-len(suffix)].rsplit("_", 1)[1]
        if stale.name != keep and stale.is_file() and (tag == level or tag not in CPU_LEVEL_TAGS):
            stale.unlink(missing_ok=True)


def ahead_of_time(build: bool = True):
    """The ahead-of-time module (built first if ``build`` and missing), or None where it cannot be had."""
    if _state["aot"] is not None or (_state["aot_tried"] and not build):
        return _state["aot"]
    name = _module_name()
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for directory in _cache_dirs():
        path = directory / (name + suffix)
        if path.is_file():
            try:
                _state["aot"] = _load(path, name)
                return _state["aot"]
            except ImportError as error:  # a broken file: rebuild below
                _state["aot_error"] = f"{path}: {error}"
    _state["aot_tried"] = True
    if not build:
        return None
    with _exclusive(AOT_LOCK):
        for directory in _cache_dirs():
            path = directory / (name + suffix)
            try:
                if not path.is_file():  # another process may have built it while this one waited
                    path = _build(directory, name)
                _state["aot"] = _load(path, name)
                return _state["aot"]
            except Exception as error:  # no compiler, read-only folder, pycc gone: try the next place, then JIT
                _state["aot_error"] = f"{type(error).__name__}: {error}"
    return None


def just_in_time():
    """The numba JIT kernel (compiled or loaded from numba's cache on first call), or None without numba."""
    if _state["jit"] is None:
        try:
            from wsol_lightning.metrics import sweeps
        except ImportError:
            return None
        functions = SimpleNamespace(level_sweeps=sweeps.level_sweeps, scoremap_best_ious_f4=sweeps.scoremap_best_ious,
                                    scoremap_best_ious_f8=sweeps.scoremap_best_ious)
        with _THREAD_LOCK:
            if _state["jit"] is None:
                with _exclusive(JIT_LOCK):  # one process compiles (~20 s), the others load numba's cache
                    _warm_up(functions)
                _state["jit"] = functions
    return _state["jit"]


def _warm_up(functions: SimpleNamespace) -> None:
    """Call each kernel once on a 4 x 4 map, with the argument types of the real calls (contiguous arrays,
    see :mod:`~wsol_lightning.metrics.boxes`): numba compiles them or loads them from its cache now."""
    import numpy as np

    scoremap = np.linspace(0, 1, 16).reshape(4, 4)
    gt = np.array([[0, 0, 2, 2]], np.int64)
    thresholds = np.arange(0, 1, 0.25)
    functions.level_sweeps((scoremap * 255).astype(np.uint8), np.arange(0, 256, 64, dtype=np.int64), gt, True, 0.0,
                           0, *workspace(4, 4))
    functions.scoremap_best_ious_f4(scoremap.astype(np.float32), thresholds, gt, 0.0, *workspace(4, 4))
    functions.scoremap_best_ious_f8(scoremap, thresholds, gt, 0.0, *workspace(4, 4))


def use_ahead_of_time() -> bool:
    """Make :func:`kernel` return the ahead-of-time module from now on (build it if needed).

    For whole processes that evaluate many maps (``evaluate.py``): no numba
    import. Its functions hold the GIL, so threads should keep the JIT kernel.
    Returns whether the ahead-of-time module is in use.
    """
    _state["use_aot"] = ahead_of_time() is not None
    return _state["use_aot"]


def kernel():
    """The kernel in use (the ahead-of-time module, or a namespace of JIT functions, or None without
    numba): ``level_sweeps`` and ``scoremap_best_ious_f4`` / ``_f8`` (arguments: see sweeps)."""
    return _state["aot"] if _state["use_aot"] else just_in_time()


def workspace(height: int, width: int, columns: int = 0):
    """Scratch arrays of the kernel for a ``height`` x ``width`` map (contents irrelevant; reuse per thread),
    with at least ``columns`` columns in the int32 rows (the level runs forced on a noisy map need more than
    the map's pixels)."""
    import numpy as np

    size = (height + 2) * (width + 2)
    return (np.empty((NUM_INT32, max(size, columns)), np.int32), np.empty((NUM_INT64, size), np.int64),
            np.empty(size, np.int16),
            np.empty(2 * size, np.uint8), np.empty((NUM_BOOL, size), np.bool_), np.empty((2, size), np.float64),
            np.empty(row_lists_size(width), np.int32))


def row_lists_size(width: int) -> int:
    """Length of the kernel's int32 row lists for maps ``width`` wide (``sweeps.row_lists_size``, which the
    kernel checks, says the same without importing this module): per level and row parity, ``(start, end,
    root)`` of up to ``ceil(width / 2)`` runs."""
    return 256 * 2 * 3 * ((width + 1) // 2)
