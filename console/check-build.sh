#!/usr/bin/env bash
# CI: the console build committed in the Python package (qwen3_api/api/console/static) is exactly what a fresh
# `npm ci && npm run build` of this folder makes, so the shipped files match their reviewed source.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null; then
    apt-get install -y nodejs npm >/dev/null  # Debian's Node (>= 18) builds it the same
fi
npm ci --no-audit --no-fund --loglevel=error
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
CONSOLE_OUT_DIR="$out" npm run build --silent >/dev/null
if ! diff -r "$out" ../qwen3_api/api/console/static; then
    echo "console: the committed build differs from a fresh one: run 'npm ci && npm run build' in console/" >&2
    exit 1
fi
echo "console: the committed build matches a fresh npm ci && npm run build"
