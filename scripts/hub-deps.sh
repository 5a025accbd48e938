#!/bin/sh
# JupyterHub's proxy for tests/hub: configurable-http-proxy 5.3.0 from the npm registry,
# installed outside the repository into $KF_TEST_CACHE/configurable-http-proxy-5.3.0.
#
#   scripts/hub-deps.sh           install unless already done; print the proxy's path
#   scripts/hub-deps.sh --check   print the proxy's path if it is installed, else exit 3
#
# An install goes into a temporary directory that is renamed into place, then the stamp file
# is written: a directory without the stamp is an interrupted install and is redone.
set -eu

VERSION=5.3.0
CACHE=${KF_TEST_CACHE:-/opt/kernelfleet-test}
DIR=$CACHE/configurable-http-proxy-$VERSION
BIN=$DIR/node_modules/.bin/configurable-http-proxy
STAMP=$DIR/.complete

if [ -f "$STAMP" ]; then
  echo "$BIN"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "configurable-http-proxy is not installed: run 'make hub-deps' (or scripts/hub-deps.sh)" >&2
  exit 3
fi
command -v npm >/dev/null 2>&1 || { echo "npm is missing (apt-get install npm)" >&2; exit 1; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.configurable-http-proxy-$VERSION.lock"
flock 9  # one install at a time; the other waits, then finds the stamp
if [ -f "$STAMP" ]; then
  echo "$BIN"
  exit 0
fi
rm -rf "$DIR" "$CACHE/.configurable-http-proxy-$VERSION".*  # what an interrupted install left
TMP=$(mktemp -d "$CACHE/.configurable-http-proxy-$VERSION.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
echo "installing configurable-http-proxy $VERSION into $DIR" >&2
(cd "$TMP" && npm install --no-audit --no-fund --no-save --prefix "$TMP" \
  --cache "$CACHE/npm-cache" "configurable-http-proxy@$VERSION" >"$TMP/npm.log" 2>&1) || {
  cat "$TMP/npm.log" >&2
  exit 1
}
chmod 755 "$TMP"
mv -T "$TMP" "$DIR"
trap - EXIT
touch "$STAMP"
echo "$BIN"
