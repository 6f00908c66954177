#!/usr/bin/env bash
# Make or reuse the project's .venv, then run the given command inside it.
#   scripts/with_venv.sh python scripts/fit.py --bg-grid-size 0.4
#   scripts/with_venv.sh python -m pytest -q
# The venv is rebuilt only when pyproject.toml changed since the last install
# (a stamp file holds its hash), so a second call starts at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
stamp="$venv/.wsol-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
install() {
    # torch/torchvision pinned (these exact releases are on this machine's disk; a CUDA build, it runs on CPU
    # too; override with WSOL_TORCH_SPEC elsewhere), this package editable with its test extra and the
    # dashboard extra (its test runs too), in one resolver run.
    local packages=(${WSOL_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1} -e "$root[test,dashboard]")
    # uv (from PyPI, into the venv) unpacks the ~6 GB of wheels in parallel: 17 s here, where pip takes 44 s.
    # It reads no pip configuration, so pip's constraint (and index) are handed over. pip is the fallback.
    local uv_args=() constraint index
    constraint="${PIP_CONSTRAINT:-$("$venv/bin/python" -m pip config get global.constraint 2>/dev/null || true)}"
    index="${PIP_INDEX_URL:-$("$venv/bin/python" -m pip config get global.index-url 2>/dev/null || true)}"
    [ -n "$constraint" ] && uv_args+=(--constraint "$constraint")
    [ -n "$index" ] && uv_args+=(--index-url "$index")
    if [ "${WSOL_NO_UV:-0}" != 1 ] && "$venv/bin/python" -m pip install -q uv 2>/dev/null \
        && "$venv/bin/uv" pip install -q --python "$venv/bin/python" "${uv_args[@]}" "${packages[@]}"; then
        return
    fi
    echo "[with_venv] uv was not available or failed: installing with pip (about 45 s more)" >&2
    # pip warns about each package missing from the machine's local file indexes: noise, not ours.
    "$venv/bin/python" -m pip install -q --no-compile "${packages[@]}" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
}

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[with_venv] installing into $venv (once; about a minute)" >&2
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    install
    # Byte-compiled on every core: with PYTHONDONTWRITEBYTECODE set, as on these machines, nothing else would
    # ever write the .pyc files, and every process would compile torch's modules again. Left out: the packages'
    # own test suites, plotly's 1,400 generated figure classes (loaded one by one, only by tune.py's plots) and
    # networkx (no run imports it): 30% of the files, 9 s of a fresh venv's 30 s of compiling here.
    "$venv/bin/python" -m compileall -q -j 0 -x '/tests/|/plotly/graph_objs/|/networkx/' "$venv/lib" \
        >/dev/null 2>&1 || true  # a few files never compile
    echo "$want" > "$stamp"
fi
# Byte-compile this checkout's own modules (only what changed; ~0.1 s when nothing did): with
# PYTHONDONTWRITEBYTECODE set, every process would otherwise compile them again (the tests start many).
"$venv/bin/python" -m compileall -q -j 0 "$root/wsol_lightning" "$root/scripts" "$root/tests" "$root/benchmarks" >/dev/null
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
cd "$root"
exec "$@"
