#!/usr/bin/env bash
# Re-create (or verify) the MathJax copy the book ships: book/_static/mathjax/tex-svg-full.js.
#
# The book renders its formulas with MathJax 3.2.2's single-file "TeX input, SVG output, all TeX extensions"
# component (2.2 MB, no web fonts, no extension loaded at run time), served from the book itself so that the
# pages typeset math with no network (_config.yml: sphinx.config.mathjax_path). The file is committed, so
# `make book` needs nothing from here; this script shows where it came from and checks it byte for byte.
#
#   scripts/fetch-mathjax.sh          check the committed file against the published one (exit 1 if different)
#   scripts/fetch-mathjax.sh --write  (re)write it from the registry
#
# Source: the npm package mathjax@3.2.2 (es5/tex-svg-full.js and LICENSE, Apache-2.0) through `npm pack`
# when npm is there, else the same bytes from PyPI's sphinx-mathjax-offline 0.0.2 wheel through pip.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=book/_static/mathjax
FILE=tex-svg-full.js
SHA256=a4354ff94fd868aea0cc6eaaa79a57fda0588646fc46ee3700a349ee0a11cbe6
PY=${PYTHON:-$PWD/.venv/bin/python}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

if command -v npm >/dev/null 2>&1; then
  (cd "$tmp" && npm pack --silent mathjax@3.2.2 >/dev/null && tar xzf mathjax-3.2.2.tgz)
  src="$tmp/package/es5/$FILE"; license="$tmp/package/LICENSE"
else
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" sphinx-mathjax-offline==0.0.2
  (cd "$tmp" && "$PY" -m zipfile -e sphinx_mathjax_offline-0.0.2-py3-none-any.whl x)
  src="$tmp/x/sphinx-mathjax-offline/static/mathjax/$FILE"; license=""
fi
got=$(sha256sum "$src" | cut -d' ' -f1)
[ "$got" = "$SHA256" ] || { echo "downloaded $FILE has sha256 $got, expected $SHA256" >&2; exit 1; }

if [ "${1:-}" = "--write" ]; then
  mkdir -p "$DEST"
  cp "$src" "$DEST/$FILE"
  [ -n "$license" ] && cp "$license" "$DEST/LICENSE"
  echo "wrote $DEST/$FILE (MathJax 3.2.2, sha256 $SHA256)"
elif cmp -s "$src" "$DEST/$FILE"; then
  echo "$DEST/$FILE is MathJax 3.2.2's $FILE, byte for byte"
else
  echo "$DEST/$FILE differs from MathJax 3.2.2's $FILE: run $0 --write" >&2; exit 1
fi
