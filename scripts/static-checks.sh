#!/bin/sh
# `npm test`'s first half: ESLint and the type-check side by side (ESLint takes one core for most
# of its 17 s). Fails if either fails, saying which.
set -u
cd "$(dirname "$0")/.."
npx eslint . &
lint=$!
npx tsc -p tsconfig.json --noEmit
types=$?
wait "$lint"
lint=$?
[ "$lint" -eq 0 ] || echo "static checks: ESLint failed" >&2
[ "$types" -eq 0 ] || echo "static checks: the type-check failed" >&2
[ "$lint" -eq 0 ] && [ "$types" -eq 0 ]
