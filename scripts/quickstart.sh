#!/usr/bin/env bash
# Quick start: install everything, then run the example notebook with its dataset on the embedded default.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
exec ./hangar quickstart "$@"
