#!/usr/bin/env bash
# What the browser tests need (tests/tests/web_ui.rs): Debian's Chromium (it cannot be
# downloaded by Playwright here) and the pinned npm packages of tests/web (playwright-core,
# axe-core). Installs what is missing; quick when everything is there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

if ! [ -x /usr/bin/chromium ]; then
  echo "==> apt-get install chromium chromium-driver (the browser tests' browser)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "chromium is missing: sudo apt-get install chromium chromium-driver" >&2
    exit 1
  fi
fi

cd "$root/tests/web"
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.meshchat-lock 2>/dev/null)" != "$want" ]; then
  echo "==> npm ci in tests/web (playwright-core, axe-core)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" >node_modules/.meshchat-lock
fi
