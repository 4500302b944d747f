#!/usr/bin/env bash
# Debian's chromium, for the test that renders `kqlwatch backtest --html` in a real headless browser
# (tests/workbench/test_backtest_browser.py). Unpacked into .cache/chromium/ (git-ignored) with the libraries
# this machine lacks, without installing anything system-wide: `apt-get install -s` lists what chromium would
# add here, `apt-get download` fetches those .deb files (kept in ${KQLWATCH_DEB_CACHE:-~/.cache/kqlwatch/debs}, so
# a fresh clone on the same machine does not download them again), `dpkg -x` unpacks them, and
# .cache/chromium/chromium runs the browser with their libraries. Cost on the 2-core machine: ~115 MB
# downloaded once (~20 s), ~20 s to unpack, ~380 MB on disk. Safe to run again: does nothing once installed.
# A machine without apt-get, or whose apt cannot find chromium, gets a message and no browser (the test says
# why it skips; under CI=true it fails instead).
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=.cache/chromium
DEBS=${KQLWATCH_DEB_CACHE:-${HOME:-/tmp}/.cache/kqlwatch/debs}

if [ -x "$DEST/chromium" ] && [ -f "$DEST/.installed" ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: no apt-get here: the headless-browser test will skip" >&2
  exit 0
fi

candidate() { apt-cache policy chromium 2>/dev/null | awk '/Candidate:/ {print $2}'; }
if [ -z "$(candidate)" ] || [ "$(candidate)" = "(none)" ]; then
  # apt's package lists may never have been fetched on a fresh machine (root only).
  if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi
fi
version=$(candidate)
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  echo "install-chromium: apt knows no chromium package: the headless-browser test will skip" >&2
  exit 0
fi

# What installing chromium would add to this machine: those packages, no more (the rest is already here).
mapfile -t packages < <(apt-get install -s --no-install-recommends chromium 2>/dev/null | awk '/^Inst / {print $2}')
if [ "${#packages[@]}" -eq 0 ] && command -v chromium >/dev/null 2>&1; then
  mkdir -p "$DEST"
  printf '#!/bin/sh\nexec chromium "$@"\n' > "$DEST/chromium"  # installed system-wide already
  chmod +x "$DEST/chromium"
  echo "system chromium $version" > "$DEST/.installed"
  exit 0
fi

mkdir -p "$DEBS"
(cd "$DEBS" && apt-get download "${packages[@]}" >/dev/null 2>&1) || {
  echo "install-chromium: apt-get download failed: the headless-browser test will skip" >&2
  exit 0
}
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp/root"
for package in "${packages[@]}"; do
  deb=$(ls "$DEBS"/"${package}"_*.deb 2>/dev/null | sort | tail -1)
  dpkg -x "$deb" "$DEST.tmp/root"
done
# Every folder the packages put a shared library in (pulseaudio keeps its own under .../pulseaudio).
libs=$(cd "$DEST.tmp" && find root -name '*.so*' -printf '%h\n' | sort -u | sed 's|^|$here/|' | paste -sd: -)
cat > "$DEST.tmp/chromium" <<EOF
#!/bin/sh
# Debian's chromium unpacked here by scripts/install-chromium.sh, with the libraries it brought.
here=\$(cd "\$(dirname "\$0")" && pwd)
export LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "\$here/root/usr/lib/chromium/chromium" "\$@"
EOF
chmod +x "$DEST.tmp/chromium"
echo "chromium $version: ${packages[*]}" > "$DEST.tmp/.installed"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "install-chromium: chromium $version unpacked into $DEST" >&2
