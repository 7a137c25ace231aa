#!/usr/bin/env bash
# Screenshot a page of the MLflow or Prefect UI with headless Chromium (Debian: apt-get install chromium),
# to look at what users see, e.g. a model version's decision table:
#   examples/screenshot.sh "http://127.0.0.1:5000/#/models/fraud/versions/2" version2.png
#   examples/screenshot.sh "http://127.0.0.1:4200/deployments" deployments.png 1600,1000
set -euo pipefail
url=${1:?usage: screenshot.sh URL OUT.png [WIDTH,HEIGHT]}
out=${2:?usage: screenshot.sh URL OUT.png [WIDTH,HEIGHT]}
size=${3:-1600,1000}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "screenshot.sh: no chromium on PATH (Debian: apt-get install -y chromium)" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --user-data-dir="$profile" --window-size="$size" \
  --virtual-time-budget=15000 --screenshot="$out" "$url" 2>/dev/null
echo "$out"
