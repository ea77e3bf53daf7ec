#!/usr/bin/env bash
# Installs what tests/clients needs on Debian 12, idempotently and quietly:
# kcat, a JDK, Maven and curl (apt), the Python packages (pip), and every Maven
# artifact the Java suite uses, so later test runs work offline.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

pkgs=()
command -v kcat > /dev/null || pkgs+=(kcat)
command -v javac > /dev/null || pkgs+=(openjdk-17-jdk-headless)
command -v mvn > /dev/null || pkgs+=(maven)
command -v curl > /dev/null || pkgs+=(curl)
python3 -m pip --version > /dev/null 2>&1 || pkgs+=(python3-pip)
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "apt-get install ${pkgs[*]}"
  SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" > /dev/null
fi

# Debian's own python3 is "externally managed" (PEP 668); a pyenv or venv python is not.
pip_flags=(-q --disable-pip-version-check --root-user-action=ignore --no-warn-script-location)
[ -f "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ] \
  && [ -z "${VIRTUAL_ENV:-}" ] && pip_flags+=(--break-system-packages)
python3 -m pip install "${pip_flags[@]}" -r "$HERE/python/requirements.txt"

# Compile the tests and run surefire on a filter matching no test: this resolves the
# dependencies, the plugins and surefire's JUnit provider (dependency:go-offline misses the last).
mvn -q -B -ntp -f "$HERE/java/pom.xml" test -Dtest=NoSuchTest -Dsurefire.failIfNoSpecifiedTests=false
echo "tests/clients dependencies ready"
