# Sourced by scripts/*: create .venv if missing and install the checkout into it.
# Usage: ensure_venv [extras]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
ensure_venv() {
    local extras="${1:-}"
    local spec="$ROOT"
    [ -n "$extras" ] && spec="$ROOT[$extras]"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating $VENV" >&2
        python3 -m venv "$VENV"
    fi
    # Reinstall only when pyproject.toml changed since the last install (editable install).
    local stamp="$VENV/.rtlearn-installed-${extras:-base}"
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        echo "installing rtlearn${extras:+[$extras]} into $VENV" >&2
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" >&2
        touch "$stamp"
    fi
}
