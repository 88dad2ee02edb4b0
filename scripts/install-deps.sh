#!/usr/bin/env bash
# Installs the Debian packages Opacity builds and tests with, if any is missing.
# Usage: scripts/install-deps.sh          (as root, or with sudo available)
#        scripts/install-deps.sh --list   (print the package names)
set -euo pipefail
packages=(libopenblas-dev libdnnl-dev libpng-dev libzstd-dev libturbojpeg0-dev zlib1g-dev libopenjp2-7-dev dcmtk dicom3tools libopenjp2-tools libopenmpi-dev openmpi-bin pkg-config unzip python3 python3-venv)
if [ "${1:-}" = "--list" ]; then echo "${packages[*]}"; exit 0; fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present (${packages[*]})"
  exit 0
fi
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
