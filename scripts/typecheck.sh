#!/usr/bin/env bash
# mypy on the package as it is imported (`syncwatch`, `syncwatch.collectors`): the source folders
# keep the design card's names (exporter/, collectors/), so mypy reads a tree of links to them.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=.build/typecheck/syncwatch
rm -rf .build/typecheck
mkdir -p "$tree"
for entry in exporter/*; do
  ln -s "../../../$entry" "$tree/$(basename "$entry")"
done
ln -s ../../../collectors "$tree/collectors"
MYPYPATH=.build/typecheck exec "${PYTHON:-.venv/bin/python}" -m mypy -p syncwatch "$@"
