#!/usr/bin/env bash
# Creates bench/peer/.venv with the peer's pinned stack. Idempotent: reinstalls only when
# requirements.txt changed (a stamp file holds its checksum).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"
stamp="$venv/.installed-$(cksum "$here/requirements.txt" | cut -d' ' -f1)"
if [ -f "$stamp" ]; then
    exit 0
fi
test -x "$venv/bin/python" || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r "$here/requirements.txt"
rm -f "$venv"/.installed-* && touch "$stamp"
echo "peer venv ready: $venv"
