#!/usr/bin/env bash
# The font `lockcheck report` draws PNG text with (plotters' ab_glyph backend reads a TTF
# file; DejaVu Sans from Debian's fonts-dejavu-core). Set LOCKCHECK_FONT to use another.
set -euo pipefail
font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
if [ -n "${LOCKCHECK_FONT:-}" ] || [ -f "$font" ]; then
  exit 0
fi
echo "setup/fonts: installing fonts-dejavu-core"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
$sudo apt-get install -y -qq fonts-dejavu-core
test -f "$font"
