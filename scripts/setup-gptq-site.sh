#!/usr/bin/env bash
# Build .gptq-site: GPTQModel + optimum (silverbullet's `gptq` extra) and the few of their dependencies
# that the main venv lacks, installed with --no-deps into a folder that `make test-gptq` puts on
# PYTHONPATH. The main venv itself is not touched.
#
# Why not `pip install "silverbullet[gptq]"` in the main venv: gptqmodel 7.6.0 pins numpy==2.2.6
# and would downgrade numpy under every other test. Its code runs with the venv's numpy 2.x
# (docs/formats.md). Six packages here are sdists, built at install time; PyPcre compiles C (gcc,
# the Python headers, and the pcre2.h it ships; it links the system's libpcre2-8).
#
# Usage: scripts/setup-gptq-site.sh [SITE_DIR]   (default .gptq-site; PYTHON=the main venv's python)
set -euo pipefail

SITE="${1:-.gptq-site}"
PYTHON="${PYTHON:-.venv/bin/python}"
# gptqmodel's and its own dependencies that the main venv does not carry, pinned (the versions the
# tests passed with). Left out on purpose: numpy==2.2.6 (the venv's numpy is used), torchao,
# protobuf, ninja, maturin (not imported on the paths silverbullet uses).
SUBDEPS=(device-smi==0.5.7 logbar==0.4.15 tokenicer==0.0.14 defuser==0.0.28 pypcre==0.6.4)

cd "$(dirname "$0")/.."
LOG="$SITE.install.log"
echo "setting up $SITE: gptqmodel + optimum beside $PYTHON (pip's output: $SITE/install.log)"

# The `gptq` extra's pins, as the main venv's silverbullet install declares them (pyproject.toml).
mapfile -t GPTQ < <("$PYTHON" - <<'PY'
import importlib.metadata as md
for r in md.requires("silverbullet") or []:
    spec, _, marker = r.partition(";")
    if marker.replace(" ", "").replace("'", '"') == 'extra=="gptq"':
        print(spec.strip())
PY
)
if [ "${#GPTQ[@]}" -eq 0 ]; then
    echo "error: no 'gptq' extra in $PYTHON's silverbullet metadata (run make setup first)" >&2
    exit 1
fi

fail() { echo "error: $1; the end of $LOG:" >&2; tail -n 40 "$LOG" >&2; exit 1; }
rm -rf "$SITE" "$SITE.tmp"
"$PYTHON" -m pip install --no-deps --target "$SITE.tmp" "${GPTQ[@]}" "${SUBDEPS[@]}" > "$LOG" 2>&1 \
    || fail "pip install --target $SITE.tmp failed"

# Check: it imports with the venv's numpy, and nothing in the folder shadows a package of the venv.
PYTHONPATH="$SITE.tmp" "$PYTHON" - >> "$LOG" 2>&1 <<'PY' || fail "the installed gptqmodel does not import"
import importlib.metadata as md
import os
import sys

site = os.path.abspath(os.environ["PYTHONPATH"])
venv = {d.metadata["Name"].lower() for d in md.distributions(path=[p for p in sys.path if os.path.abspath(p) != site])}
ours = {d.metadata["Name"].lower() for d in md.distributions(path=[site])}
assert not ours & venv, f"would shadow the venv's {sorted(ours & venv)}"

import numpy
import optimum  # noqa: F401
from gptqmodel.nn_modules.qlinear import BaseQuantLinear  # noqa: F401
import gptqmodel

assert not numpy.__file__.startswith(site), numpy.__file__
print(f"ok: gptqmodel {gptqmodel.__version__}, optimum {md.version('optimum')}, numpy {numpy.__version__} (venv)")
PY

mv "$SITE.tmp" "$SITE"
mv "$LOG" "$SITE/install.log"
touch "$SITE/.installed"
