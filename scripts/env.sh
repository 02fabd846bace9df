# Sourced by every script: where lockcheck keeps what it installs and builds outside the clone,
# so repeated runs (and CI) stay warm. See README "Environment" for every variable.
export LOCKCHECK_HOME="${LOCKCHECK_HOME:-$HOME/.cache/lockcheck}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$LOCKCHECK_HOME/target}"
export LOCKCHECK_VENV="${LOCKCHECK_VENV:-$LOCKCHECK_HOME/venv}"
export PATH="$LOCKCHECK_VENV/bin:$PATH"
