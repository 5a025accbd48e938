#!/bin/sh
# The Kubernetes control plane, kubelet and etcd of tests/k8s, built from the Go module proxy and
# cached outside the repository: $KF_TEST_CACHE/k8s-v1.35.4-etcd-v3.6.16-<recipe hash>/bin.
#
#   scripts/k8s-deps.sh           build unless already done; print the cache directory
#   scripts/k8s-deps.sh --check   print the cache directory if it is complete, else exit 3
#
# k8s.io/kubernetes requires its staging modules (k8s.io/api, client-go, ...) at v0.0.0 through
# replace directives that Go ignores in a dependency, so the build goes through a wrapper module
# of ours that replaces each of them with its tagged release (v0.35.4). etcd gets a wrapper of its
# own, so that the two module graphs never mix. Go's caches live in the cache directory during the
# build and are removed after it: only bin/ is kept. A build writes into a temporary directory,
# renames it into place, then writes the stamp: a directory without it is redone.
#
# A cold build takes 15-25 min on 2 cores; KF_BUILD_NICE=1 runs it at low priority.
set -eu

CACHE=${KF_TEST_CACHE:-/opt/kernelfleet-test}
K8S=v1.35.4
STAGING=v0.35.4
ETCD=v3.6.16
CMDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"
RECIPE="k8s=$K8S staging=$STAGING etcd=$ETCD cmds=$CMDS go=$(go env GOVERSION 2>/dev/null || echo none) v1"
HASH=$(printf '%s\n' "$RECIPE" | sha256sum | cut -c1-12)
NAME=k8s-$K8S-etcd-$ETCD-$HASH
DIR=$CACHE/$NAME
STAMP=$DIR/.complete

if [ -f "$STAMP" ]; then
  echo "$DIR"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "Kubernetes is not built: run 'make k8s-deps' (or scripts/k8s-deps.sh; 15-25 min once)" >&2
  exit 3
fi
command -v go >/dev/null 2>&1 || { echo "go is missing (Go >= 1.24 is needed)" >&2; exit 1; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.k8s.lock"
flock 9
if [ -f "$STAMP" ]; then
  echo "$DIR"
  exit 0
fi
rm -rf "$DIR" "$CACHE/.$NAME".*
TMP=$(mktemp -d "$CACHE/.$NAME.XXXXXX")
trap 'chmod -R u+w "$TMP" 2>/dev/null; rm -rf "$TMP"' EXIT
export GOMODCACHE="$TMP/gomod" GOCACHE="$TMP/gocache" GOPATH="$TMP/gopath"
export GOFLAGS="-mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off
NICE=""
[ "${KF_BUILD_NICE:-}" = 1 ] && NICE="nice -n 19"
started=$(date +%s)
echo "building Kubernetes $K8S and etcd $ETCD into $DIR (15-25 min once)" >&2

# Kubernetes: the wrapper module.
mkdir -p "$TMP/k8s" "$TMP/bin"
cd "$TMP/k8s"
go mod init kernelfleet.test/k8sbuild >/dev/null 2>&1
go mod edit -require=k8s.io/kubernetes@$K8S
GOMOD=$(go mod download -json k8s.io/kubernetes@$K8S | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
for m in $(sed -n 's/^[[:space:]]*\(k8s\.io\/[a-z0-9.-]*\) v0\.0\.0$/\1/p' "$GOMOD" | sort -u); do
  go mod edit -replace="$m=$m@$STAGING"
done
cat > tools.go <<'EOF'
//go:build tools

package k8sbuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
go mod tidy >"$TMP/tidy.log" 2>&1 || { cat "$TMP/tidy.log" >&2; exit 1; }
for c in $CMDS; do
  $NICE go build -p 2 -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=35" \
    -o "$TMP/bin/$c" "k8s.io/kubernetes/cmd/$c"
  echo "built $c ($(( $(date +%s) - started )) s)" >&2
done

# etcd: its own wrapper module.
mkdir -p "$TMP/etcd"
cd "$TMP/etcd"
go mod init kernelfleet.test/etcdbuild >/dev/null 2>&1
cat > main.go <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
go get go.etcd.io/etcd/server/v3@$ETCD >"$TMP/etcd-get.log" 2>&1 || { cat "$TMP/etcd-get.log" >&2; exit 1; }
go mod tidy >"$TMP/etcd-tidy.log" 2>&1 || { cat "$TMP/etcd-tidy.log" >&2; exit 1; }
$NICE go build -p 2 -trimpath -ldflags "-s -w" -o "$TMP/bin/etcd" .
echo "built etcd ($(( $(date +%s) - started )) s)" >&2

# Keep bin/ and the recipe; drop Go's caches (several GB).
cd "$CACHE"
cp "$TMP/k8s/go.mod" "$TMP/k8s/go.sum" "$TMP/bin/" 2>/dev/null || true
mkdir -p "$TMP/keep"
mv "$TMP/bin" "$TMP/keep/bin"
printf '%s\n' "$RECIPE" > "$TMP/keep/recipe"
echo "$(( $(date +%s) - started ))" > "$TMP/keep/build-seconds"
chmod -R u+w "$TMP/gomod" 2>/dev/null || true
rm -rf "$TMP/gomod" "$TMP/gocache" "$TMP/gopath" "$TMP/k8s" "$TMP/etcd"
chmod 755 "$TMP/keep"
mv -T "$TMP/keep" "$DIR"
trap - EXIT
rm -rf "$TMP"
touch "$STAMP"
echo "$DIR"
