"""Processes that need the kernel at the same time compile it once between them (wsol_lightning.metrics.compiled).

Each test starts two processes that call the package at the same moment, with the expensive step (numba's
compile of the JIT kernel, the ahead-of-time build) replaced by a stand-in that logs its start and end and
does not finish before both processes have made their call: without the file lock, both would compile.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: argv: the cache folder, the shared log, "jit" or "aot".
RACER = """
import sys, time
from pathlib import Path

from wsol_lightning.metrics import compiled

folder, log, form = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
compiled._cache_dirs = lambda: iter([folder])


def note(line):
    with open(log, "a") as file:
        file.write(line + "\\n")


def both_called():  # the stand-in does not finish before the other process has made its call too
    deadline = time.monotonic() + 60
    while log.read_text().count("call") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)


def warm_up(functions):
    note("compile start")
    both_called()
    note("compile end")


def build(directory, name):
    note("compile start")
    both_called()
    target = directory / (name + ".so")
    target.write_text("built")
    note("compile end")
    return target


compiled._warm_up, compiled._build = warm_up, build
compiled._load = lambda path, name: path.read_text()
compiled.importlib.machinery.EXTENSION_SUFFIXES[0] = ".so"
note("call")
result = compiled.just_in_time() if form == "jit" else compiled.ahead_of_time()
print("loaded" if result is not None else "none")
"""


def _race(tmp_path: Path, form: str) -> list:
    log = tmp_path / "log"
    log.write_text("")
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path / "cache"), str(log), form], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0 and out.strip() == "loaded", err[-2000:]
    return [line for line in log.read_text().splitlines() if line != "call"]


def test_the_jit_kernel_is_compiled_by_one_process_at_a_time(tmp_path):
    # The second process compiles only after the first has written numba's cache: it then just loads it.
    assert _race(tmp_path, "jit") == ["compile start", "compile end"] * 2


def test_the_ahead_of_time_module_is_built_once_between_racing_processes(tmp_path):
    assert _race(tmp_path, "aot") == ["compile start", "compile end"]  # the other process loads its build


V2_FLAGS = "cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3"
V3_FLAGS = V2_FLAGS + " avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"


def test_the_ahead_of_time_build_targets_the_highest_x86_64_level_the_processor_has(tmp_path, monkeypatch):
    """The module is built for x86-64-v3 or -v2 only where /proc/cpuinfo lists every flag of the level (a
    module with instructions the processor lacks would crash it), and the level is in the module's name."""
    import os

    from wsol_lightning.metrics import compiled

    if os.uname().machine != "x86_64":
        assert compiled.target_cpu() == ""
        return
    v4_flags = V3_FLAGS + " avx512f avx512bw avx512cd avx512dq avx512vl"
    for flags, level in ((v4_flags + " sse2", "x86-64-v4"), (V3_FLAGS + " sse2 avx512f", "x86-64-v3"),
                         (V3_FLAGS.replace(" avx2", ""), "x86-64-v2"), (V2_FLAGS, "x86-64-v2"),
                         (V2_FLAGS.replace("popcnt ", ""), ""), ("", "")):
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
        assert compiled.target_cpu(str(cpuinfo)) == level, flags
    assert compiled.target_cpu(str(tmp_path / "missing")) == ""
    monkeypatch.setattr(compiled, "target_cpu", lambda: "x86-64-v2")
    assert compiled._module_name().endswith("_x86_64_v2")
    monkeypatch.setattr(compiled, "target_cpu", lambda: "")
    assert compiled._module_name().endswith("_baseline")


def test_a_build_removes_the_older_builds_of_its_level_and_unlevelled_ones_only(tmp_path):
    from wsol_lightning.metrics import compiled

    suffix = compiled.importlib.machinery.EXTENSION_SUFFIXES[0]
    names = ["_sweeps_aot_new0000000000000_x86_64_v3", "_sweeps_aot_old0000000000000_x86_64_v3",
             "_sweeps_aot_old0000000000000_x86_64_v4", "_sweeps_aot_old0000000000000_baseline",
             "_sweeps_aot_53f707de3f332e9b"]  # the last: named before levels were
    for name in names:
        (tmp_path / (name + suffix)).write_text("")
    (tmp_path / "sweeps_aot_build.lock").write_text("")
    compiled.remove_stale_builds(tmp_path, names[0] + suffix)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [names[0] + suffix, names[2] + suffix, names[3] + suffix, "sweeps_aot_build.lock"])
