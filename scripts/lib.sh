# Shared by scripts/setup and scripts/test. Not meant to be run directly.
VENV="${REBUILD_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
APT_PACKAGES=(docker.io debootstrap diffoscope-minimal git unzip zip xxd file systemd passwd
  ca-certificates iptables chromium)

step() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "setup: need root for: $*" >&2; return 1
  fi
}

install_system_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  if [ "${#missing[@]}" = 0 ]; then
    step "system packages: all present"
    return
  fi
  step "installing system packages: ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "${missing[@]}"
}

docker_answers() { timeout 10 docker info >/dev/null 2>&1; }

ensure_dockerd() {
  if docker_answers; then return; fi
  if [ "$(id -u)" != 0 ]; then
    echo "setup: no Docker engine answers and we are not root to start one" >&2
    return 1
  fi
  step "starting dockerd"
  local log=/var/log/rebuild-dockerd.log
  nohup /usr/sbin/dockerd >"$log" 2>&1 &
  for _ in $(seq 1 60); do
    if docker_answers; then return; fi
    sleep 1
  done
  echo "setup: dockerd did not come up; see $log" >&2
  tail -20 "$log" >&2
  return 1
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    step "creating Python environment in $VENV"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
      || { echo "setup: need Python 3.11 or newer as $PYTHON" >&2; return 1; }
    "$PYTHON" -m venv "$VENV"
  fi
  step "installing rebuild and its pinned dependencies into $VENV"
  "$VENV/bin/python" -m pip install -q -c requirements/constraints.txt -e '.[dev]'
}

build_environments() {
  step "building the pinned build environments"
  "$VENV/bin/rebuild" env build --all
}

run_main_job() {
  # The embedded default: rebuild the fixture wheel from its tagged source in
  # the pinned python-3.11 environment and compare it with the published one.
  "$VENV/bin/rebuild" verify --fixture python-wheel --report-dir "${REBUILD_REPORT_DIR:-rebuild-reports}"
}
