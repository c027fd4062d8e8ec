# Sourced by the other scripts: installs what building and running ragd needs, once.
# System packages: a C toolchain and cmake/clang (llama.cpp is built from source by a later milestone).
# apt_install WHY PACKAGE...: installs the packages (as root), or says what to install and exits.
apt_install() {
  local why=$1; shift
  echo "==> installing $*: $why"
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null || {
      apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
  else
    echo "missing system packages ($*); install them with: sudo apt-get install $*" >&2
    exit 1
  fi
}
need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v clang >/dev/null 2>&1 || need_apt+=(clang libclang-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
[ ${#need_apt[@]} -eq 0 ] || apt_install "building ragd" "${need_apt[@]}"
command -v python3 >/dev/null 2>&1 || { echo "python3 with pip is needed to fetch the models" >&2; exit 1; }
export CARGO_TERM_PROGRESS_WHEN=never
