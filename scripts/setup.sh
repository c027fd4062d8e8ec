# Sourced by the other scripts: installs what building and running ragd needs, once.
# System packages: a C toolchain and cmake/clang (llama.cpp is built from source by a later milestone).
need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v clang >/dev/null 2>&1 || need_apt+=(clang libclang-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing system packages: ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null || {
      apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null; }
  else
    echo "missing system packages (${need_apt[*]}); install them with: sudo apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
fi
command -v python3 >/dev/null 2>&1 || { echo "python3 with pip is needed to fetch the models" >&2; exit 1; }
export CARGO_TERM_PROGRESS_WHEN=never
