#!/usr/bin/env bash
# Download, here, the wheels benchmarks/device_check.sh needs on the GPU machine (Python 3.12, x86-64,
# no registry there): optuna, optuna-integration and jsonargparse with their missing dependencies,
# the versions of this project's venv. They go to .whl/ in the repository root, which this script adds
# to .git/info/exclude (the device tool's `carry` takes ignored paths); about 7 MB.
#
#   bash benchmarks/device_wheels.sh            # then: device run with carry [".whl"],
#                                               #       command "bash benchmarks/device_check.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
grep -qxF '/.whl/' "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null \
    || echo '/.whl/' >> "$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p .whl
# Present on the device image (KINDS.md): numpy, packaging, tqdm, PyYAML, typing-extensions, MarkupSafe.
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    optuna==5.0.0 optuna-integration==5.0.0 alembic==1.20.1 SQLAlchemy==2.1.9 colorlog==6.12.0 Mako==1.4.3 \
    jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.15.0
ls -la .whl
