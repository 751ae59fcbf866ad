#!/usr/bin/env bash
# Set up if needed, then run the whole test suite offline.
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DS_ACCELERATOR=cpu TOKENIZERS_PARALLELISM=false
set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
# pytest exits 5 when no tests are collected: that is a failure of the suite, say so.
if [ $rc -eq 5 ]; then echo "no tests collected"; exit 1; fi
exit $rc
