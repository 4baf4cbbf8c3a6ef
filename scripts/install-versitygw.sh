#!/usr/bin/env bash
# Installs the pinned versitygw (Apache-2.0 S3 gateway) that the S3 backend's tests run
# against (storage/s3test). Idempotent: when $(go env GOPATH)/bin/versitygw is already
# the pinned version it does nothing. The first install compiles versitygw and takes a
# few minutes; `make deps` calls this script.
#
# Environment: GO (the go command, default "go"), VERSITYGW_VERSION (default below).
set -euo pipefail

GO=${GO:-go}
VERSION=${VERSITYGW_VERSION:-v1.8.0}
PKG=github.com/versity/versitygw/cmd/versitygw

gobin=$("$GO" env GOBIN)
if [ -z "$gobin" ]; then
  gobin="$("$GO" env GOPATH | cut -d: -f1)/bin"
fi
bin="$gobin/versitygw"
stamp="$gobin/.versitygw.version"

installed_version() {
  # Prefer the binary's own answer; fall back to the stamp this script writes.
  local v
  v=$("$bin" --version 2>/dev/null | grep -Eo 'v?[0-9]+\.[0-9]+\.[0-9]+' | head -n1 || true)
  if [ -z "$v" ] && [ -f "$stamp" ]; then
    v=$(cat "$stamp")
  fi
  echo "${v#v}"
}

if [ -x "$bin" ] && [ "$(installed_version)" = "${VERSION#v}" ]; then
  echo "versitygw ${VERSION} already installed at $bin"
  exit 0
fi

if [ -x "$bin" ]; then
  echo "versitygw at $bin is version '$(installed_version)', want ${VERSION}: reinstalling"
fi
echo "installing versitygw ${VERSION}: $GO install ${PKG}@${VERSION} (takes a few minutes)"
start=$(date +%s)
GOFLAGS=${GOFLAGS:-} "$GO" install "${PKG}@${VERSION}"
echo "$VERSION" >"$stamp"
echo "installed $bin ($("$bin" --version 2>/dev/null | head -n1 || echo "version unknown")) in $(( $(date +%s) - start ))s"
