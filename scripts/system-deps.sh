#!/usr/bin/env bash
# Debian packages the test suite drives: Chromium for the browser test (Playwright uses /usr/bin/chromium; never
# `playwright install`) and PostgreSQL 15 for the study store. Installs only what is missing; safe to run again.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y -qq "${need[@]}" >/tmp/convgen-apt.log 2>&1; then
    $sudo apt-get update -qq >>/tmp/convgen-apt.log 2>&1
    $sudo apt-get install -y -qq "${need[@]}" >>/tmp/convgen-apt.log 2>&1 || { tail -20 /tmp/convgen-apt.log; exit 1; }
fi
echo "system-deps: installed ${need[*]}"
