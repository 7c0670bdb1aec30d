# Shared by scripts/setup and scripts/test. Not meant to be run directly.
VENV="${REBUILD_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
APT_PACKAGES=(docker.io debootstrap diffoscope-minimal git unzip zip xxd file systemd passwd
  ca-certificates iptables chromium redis-server redis-tools dpkg-dev jq)

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

# The fleet's broker (docs/fleet.md): Debian's Redis on loopback, with the
# append-only file on and fsynced on every write, so a queued job survives a
# broker restart or crash. Started like dockerd when nothing answers; a Redis
# already running (e.g. under systemd) gets the same persistence settings.
REDIS_PORT="${REBUILD_REDIS_PORT:-6379}"

redis_answers() {
  timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG
}

ensure_redis() {
  if ! redis_answers; then
    if [ "$(id -u)" != 0 ]; then
      echo "setup: no Redis answers on 127.0.0.1:$REDIS_PORT and we are not root to start one" >&2
      return 1
    fi
    step "starting redis-server on 127.0.0.1:$REDIS_PORT (append-only file on)"
    local user=root
    if id redis >/dev/null 2>&1; then user=redis; fi
    install -d -o "$user" -m 0750 /var/lib/rebuild-redis
    install -d -o "$user" -m 0755 /var/log/rebuild-redis
    # Own directory and options: nothing here depends on the packaged service
    # (no init system in containers and CI).
    runuser -u "$user" -- redis-server --bind "127.0.0.1 -::1" --port "$REDIS_PORT" \
      --protected-mode yes --dir /var/lib/rebuild-redis --appendonly yes \
      --appendfsync always --save "" --daemonize yes \
      --logfile /var/log/rebuild-redis/redis.log
    for _ in $(seq 1 30); do
      if redis_answers; then break; fi
      sleep 1
    done
    if ! redis_answers; then
      echo "setup: redis-server did not come up; see /var/log/rebuild-redis/redis.log" >&2
      tail -20 /var/log/rebuild-redis/redis.log >&2 || true
      return 1
    fi
  fi
  # Jobs must survive a broker restart: make sure the running server keeps them.
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config set appendonly yes >/dev/null
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config set appendfsync always >/dev/null
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
  # The package store keeps every .deb the locks pin, so the environments
  # still build once the mirror has moved on. Fill it first: a package that
  # neither the store nor the mirror (nor REBUILD_DEBIAN_MIRROR, e.g. a
  # snapshot archive) has cannot be built as locked.
  step "fetching the locks' pinned packages into the package store"
  local out rc=0
  out=$(mktemp)
  "$VENV/bin/rebuild" env fetch --all --json >"$out" || rc=$?
  if [ "$rc" != 0 ]; then
    # (rebuild has printed the error, naming the packages, on stderr.)
    if grep -q '"kind": "PackagesUnavailableError"' "$out" \
        && [ "${REBUILD_NO_RELOCK:-0}" != 1 ]; then
      rm -f "$out"
      relock_after_mirror_moved
    else
      rm -f "$out"
      return 1
    fi
  fi
  rm -f "$out"
  step "building the pinned build environments"
  "$VENV/bin/rebuild" env build --all
}

relock_after_mirror_moved() {
  cat >&2 <<'NOTE'

==> NOTE: the Debian mirror no longer serves versions that containers/*/lock.json
    pin, and the package store does not hold them. Setup re-locks every
    environment at the mirror's newest versions and rebuilds the fixtures'
    published artifacts from source in them (each checked by a second,
    independent build). The tests then run on those new locks; `git status`
    shows what changed. To build the committed locks exactly instead, give
    setup their packages (rebuild env import FILE, or REBUILD_PACKAGE_STORE)
    or a snapshot archive (REBUILD_DEBIAN_MIRROR), or set REBUILD_NO_RELOCK=1
    to stop here.
NOTE
  relock_environments
}

relock_environments() {
  step "re-locking every environment at the mirror's newest versions"
  "$VENV/bin/rebuild" env lock --all
  step "rebuilding the fixtures' published artifacts from source"
  refresh_fixtures
}

refresh_fixtures() {
  # Each fixture with a published artifact: build it from its tagged source
  # in its (new) environment, publish that, then a second build must agree
  # (reproduced) or, for a fixture meant to differ, still differ (mismatch).
  local spec name fields artifact expect tmp rebuilt rc
  for spec in fixtures/*/fixture.toml; do
    name=$(basename "$(dirname "$spec")")
    fields=$("$VENV/bin/python" -c \
      'import sys, tomllib; d = tomllib.load(open(sys.argv[1], "rb")); print(d["artifact"], d["expect"])' \
      "$spec")
    read -r artifact expect <<<"$fields"
    case "$artifact" in published/*) ;; *) continue ;; esac
    tmp=$(mktemp -d)
    rc=0
    "$VENV/bin/rebuild" verify --fixture "$name" --report-dir "$tmp/first" --json \
      >"$tmp/first.json" || rc=$?
    rebuilt=$("$VENV/bin/python" -c \
      'import json, sys; print(json.load(open(sys.argv[1])).get("rebuilt_artifact") or "")' \
      "$tmp/first.json")
    if [ -z "$rebuilt" ] || [ ! -f "$rebuilt" ]; then
      echo "setup: fixture $name did not build (exit $rc); see $tmp" >&2
      return 1
    fi
    cp "$rebuilt" "fixtures/$name/$artifact"
    rc=0
    "$VENV/bin/rebuild" verify --fixture "$name" --report-dir "$tmp/second" >/dev/null || rc=$?
    case "$expect:$rc" in
      reproduced:0 | mismatch:1) echo "fixture $name: published anew; a second build: $expect" ;;
      *) echo "setup: fixture $name: second build exit $rc, expected $expect; see $tmp" >&2
         return 1 ;;
    esac
    rm -rf "$tmp"
  done
}

run_main_job() {
  # The embedded default: the whole secure-update story on 127.0.0.1 (log,
  # witnesses, maintainer, three rebuilders in the pinned php-8.2 environment,
  # HTTPS mirrors, the updater daemon), then the attacks it must refuse.
  # Exit 0 only when every expected outcome happened (docs/threat-model.md).
  "$VENV/bin/rebuild" demo
}
