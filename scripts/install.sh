#!/bin/sh
# Builds `opacity` in release mode and installs it with its model zoo:
#
#     DIR/bin/opacity
#     DIR/share/opacity/zoo/manifest.json  (+ the shipped .opb bundles)
#
# The binary finds the zoo relative to its own location, so DIR can be anywhere (and moved as
# a whole); put DIR/bin on PATH. The binary links the Swift runtime of the toolchain that
# built it.
#
# Usage: scripts/install.sh [--prefix DIR] [--skip-build]
#   --prefix DIR    where to install (default /usr/local; needs write access there)
#   --skip-build    install the binary already in .build/release (no `swift build`)
# Exit status: 0 installed, 1 a step failed, 64 a wrong option.
set -eu
prefix=/usr/local
build=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || { echo "install.sh: --prefix needs a folder" >&2; exit 64; }; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --skip-build) build=no; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option '$1' (expected --prefix DIR or --skip-build)" >&2; exit 64 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ "$build" = yes ]; then swift build -c release --product opacity; fi
bin="$(swift build -c release --show-bin-path)/opacity"
[ -x "$bin" ] || { echo "install.sh: no built binary at $bin; run without --skip-build" >&2; exit 1; }
mkdir -p "$prefix/bin" "$prefix/share/opacity/zoo" || {
  echo "install.sh: cannot write to $prefix; run with sudo, or choose --prefix \$HOME/.local" >&2; exit 1; }
prefix=$(cd "$prefix" && pwd)
# Copy next to the target, then rename: a running opacity is never half overwritten.
cp "$bin" "$prefix/bin/.opacity.new"
chmod 755 "$prefix/bin/.opacity.new"
mv -f "$prefix/bin/.opacity.new" "$prefix/bin/opacity"
for f in zoo/manifest.json zoo/*.opb; do
  [ -f "$f" ] || continue
  cp "$f" "$prefix/share/opacity/zoo/.$(basename "$f").new"
  mv -f "$prefix/share/opacity/zoo/.$(basename "$f").new" "$prefix/share/opacity/zoo/$(basename "$f")"
done
# The installed binary must find the installed zoo and every bundle must match its hash.
env -u OPACITY_ZOO_MANIFEST "$prefix/bin/opacity" zoo verify
echo "installed $prefix/bin/opacity $("$prefix/bin/opacity" --version) and its zoo in $prefix/share/opacity/zoo"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: $prefix/bin is not on PATH; add it with: export PATH=\"$prefix/bin:\$PATH\"" ;;
esac
