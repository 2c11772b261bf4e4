#!/usr/bin/env bash
# Build the real Kubernetes control plane the tests under tests/realkube/ run against:
# kube-apiserver and kube-controller-manager of a pinned Kubernetes release and etcd of a pinned
# release, from the Go module proxy, into a cache keyed by version. Reused when present.
#
#   hack/kube-bin.sh            # build (or reuse) and print the bin directory on the last line
#   hack/kube-bin.sh --print    # print the bin directory if complete, else exit 1 (no build)
#
# Environment: FLOWEXPORT_KUBE_VERSION (1.37.2), FLOWEXPORT_ETCD_VERSION (3.7.3),
# FLOWEXPORT_KUBE_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/flowexport), GO (go).
#
# k8s.io/kubernetes is not go-gettable as is: its go.mod requires its 33 staging modules at
# v0.0.0 and replaces them with ./staging/src/..., which applies only inside its own repository.
# A scratch module requiring it and replacing each staging module with its published v0.Y.Z is
# the known way to build it. The staging list is read from k8s.io/kubernetes's own go.mod.
set -euo pipefail

# All in one function, parsed whole before it runs: editing this file while a build runs
# cannot change what the running build does.
main() {

    KUBE_VERSION=${FLOWEXPORT_KUBE_VERSION:-1.37.2}
    ETCD_VERSION=${FLOWEXPORT_ETCD_VERSION:-3.7.3}
    CACHE_ROOT=${FLOWEXPORT_KUBE_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/flowexport}
    DIR="$CACHE_ROOT/kube-v$KUBE_VERSION-etcd-v$ETCD_VERSION"
    BIN="$DIR/bin"
    GO=${GO:-go}
    if ! command -v "$GO" >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
        GO=/usr/local/go/bin/go
    fi
    BINARIES=(kube-apiserver kube-controller-manager etcd)

    complete() {
        local b
        for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
        [[ -f "$BIN/.complete" ]]
    }

    if [[ "${1:-}" == "--print" ]]; then
        complete && { echo "$BIN"; exit 0; }
        exit 1
    fi

    if complete; then
        echo "kube-bin: reusing $BIN (kube v$KUBE_VERSION, etcd v$ETCD_VERSION)" >&2
        echo "$BIN"
        exit 0
    fi

    command -v "$GO" >/dev/null || { echo "kube-bin: no Go toolchain ('$GO' not found)" >&2; exit 1; }
    mkdir -p "$BIN" "$DIR/kube" "$DIR/etcd"
    export GOFLAGS="${GOFLAGS:+$GOFLAGS }-trimpath"
    export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
    start=$(date +%s)

    # --- etcd ---------------------------------------------------------------------------------
    # go.etcd.io/etcd/server/v3 has relative replaces too (etcd#18501), so `go install` fails; a
    # wrapper module requiring the published release builds it.
    if [[ ! -x "$BIN/etcd" ]]; then
        cat > "$DIR/etcd/go.mod" <<GOMOD
module flowexport.local/etcdbin

go $("$GO" env GOVERSION | sed 's/^go//')

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
GOMOD
        cat > "$DIR/etcd/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
        (
            cd "$DIR/etcd"
            t0=$(date +%s)
            GOFLAGS="$GOFLAGS -mod=mod" "$GO" mod download go.etcd.io/etcd/server/v3
            nice -n 10 "$GO" build -mod=mod -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
            mv "$BIN/etcd.tmp" "$BIN/etcd"
            echo "kube-bin: built etcd in $(( $(date +%s) - t0 )) s" >&2
        )
    fi

    # --- kube-apiserver and kube-controller-manager -------------------------------------------
    minor=${KUBE_VERSION#*.}; minor=${minor%%.*}
    patch=${KUBE_VERSION##*.}
    staging_version="v0.$minor.$patch"
    kmod=$("$GO" mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
    [[ -f "$kmod" ]] || { echo "kube-bin: cannot read the go.mod of k8s.io/kubernetes@v$KUBE_VERSION" >&2; exit 1; }
    mapfile -t staging < <(sed -n 's|^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*$|\1|p' "$kmod")
    (( ${#staging[@]} > 0 )) || { echo "kube-bin: no staging modules found in $kmod" >&2; exit 1; }
    goline=$(sed -n 's/^go \(.*\)$/\1/p' "$kmod")
    echo "kube-bin: k8s.io/kubernetes v$KUBE_VERSION (go $goline), ${#staging[@]} staging modules at $staging_version" >&2
    {
        echo "module flowexport.local/kubebin"
        echo
        echo "go $goline"
        echo
        echo "require k8s.io/kubernetes v$KUBE_VERSION"
        echo
        echo "replace ("
        for m in "${staging[@]}"; do echo "	$m => $m $staging_version"; done
        echo ")"
    } > "$DIR/kube/go.mod"
    cat > "$DIR/kube/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
    ldflags="-s -w"
    for kv in "gitVersion=v$KUBE_VERSION" "gitMajor=${KUBE_VERSION%%.*}" "gitMinor=$minor" \
              "gitTreeState=clean" "buildDate=1970-01-01T00:00:00Z"; do
        ldflags+=" -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
    done
    (
        cd "$DIR/kube"
        for b in kube-apiserver kube-controller-manager; do
            if [[ ! -x "$BIN/$b" ]]; then
                t0=$(date +%s)
                nice -n 10 "$GO" build -mod=mod -ldflags "$ldflags" -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b"
                mv "$BIN/$b.tmp" "$BIN/$b"
                echo "kube-bin: built $b in $(( $(date +%s) - t0 )) s" >&2
            fi
        done
    )

    "$BIN/kube-apiserver" --version >&2
    "$BIN/etcd" --version | head -1 >&2
    touch "$BIN/.complete"
    echo "kube-bin: done in $(( $(date +%s) - start )) s; binaries in $BIN" >&2
    echo "$BIN"
}

main "$@"
