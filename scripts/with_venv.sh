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
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[with_venv] installing into $venv (once; about 2 minutes)" >&2
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    # torch/torchvision first, pinned: these exact releases are on this machine's disk
    # (a CUDA build; it runs on CPU too). Override with WSOL_TORCH_SPEC elsewhere.
    "$venv/bin/python" -m pip install -q ${WSOL_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1} >&2
    "$venv/bin/python" -m pip install -q -e "$root[test]" >&2
    echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
cd "$root"
exec "$@"
