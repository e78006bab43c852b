# Shared helpers for the project's scripts. Source it; it defines functions only.

# apt-get install the Debian packages given, only those whose command is missing.
# usage: need_pkg COMMAND PACKAGE [PACKAGE...]
need_pkg() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  echo "installing $* (for $cmd)" >&2
  if ! timeout 600 apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1; then
    timeout 300 apt-get update -q >/dev/null 2>&1 || true
    timeout 900 apt-get install -y -q --no-install-recommends "$@" >/dev/null
  fi
}

# apt-get install the Debian packages given (for what no command names, such as a Python module).
need_pkg_anyway() {
  echo "installing $*" >&2
  timeout 300 apt-get update -q >/dev/null 2>&1 || true
  timeout 900 apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

need_cargo() {
  command -v cargo >/dev/null || { echo "cargo is required (rustup toolchain 1.95)" >&2; exit 1; }
}
