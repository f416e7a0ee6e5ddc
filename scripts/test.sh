#!/usr/bin/env bash
# Install fse_plugin with its test extras, lint, and run the test suite (CPU only).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet torch==2.14.1 torchvision==0.29.1
python3 -m pip install --quiet -e '.[dev,arcface]'
python3 -m ruff check .
python3 -m pytest -q tests "$@"
