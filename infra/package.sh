#!/usr/bin/env bash
# `make package`: build/sam.json + build/deployment.zip, checked and linted, ready for `make deploy`
# (infra/DEPLOY.md). STAGE picks the Chalice stage of .chalice/config.json (default: dev); OUT the directory.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE="${STAGE:-dev}"
BIN="${BIN:-.venv/bin}"
OUT="${OUT:-build}"
# app.py names its queues and event rule from CODERUNNER_STAGE when chalice imports it.
export CODERUNNER_STAGE="$STAGE"
# Chalice wants a region to look up service principals; the template itself names none.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-${AWS_REGION:-us-east-1}}"
export PYTHONPATH="${PYTHONPATH:-.}"

mkdir -p "$OUT"
rm -f "$OUT/sam.json" "$OUT/deployment.zip"
"$BIN/python" -m infra.build_template --stage "$STAGE" --out "$OUT/merge-template.json"
"$BIN/chalice" package --stage "$STAGE" --merge-template "$OUT/merge-template.json" "$OUT"
"$BIN/python" -m infra.build_template --stage "$STAGE" --finalize "$OUT/sam.json"  # the sandbox: an image
"$BIN/python" -m infra.build_template --stage "$STAGE" --check "$OUT/sam.json"
"$BIN/python" -m infra.package_contents "$OUT/deployment.zip"  # no dev tooling (moto, devtools) ships
"$BIN/cfn-lint" "$OUT/sam.json"  # errors and warnings stop the package, as in tests/integration/test_infra.py
echo "packaged stage '$STAGE': $OUT/sam.json and $OUT/deployment.zip (next: infra/DEPLOY.md)"
