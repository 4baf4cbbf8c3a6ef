#!/usr/bin/env bash
# Import rules from ARCHITECTURE.md:
#  - coordinator/ never imports worker/, paramserver/ or gorgonia (directly or not);
#  - coordinator/scheduler imports no I/O package;
#  - only the node package (and cmd/, through it) wires roles together: no package
#    outside node/ and cmd/ imports both the coordinator and a node role;
#  - modeldef, the one definition of a network, is a leaf: it imports jobs and the
#    standard library only (no gorgonia, worker, export or serve).
set -euo pipefail
cd "$(dirname "$0")/.."
mod=$(go list -m)
fail=0

while read -r pkg deps; do
  for d in $deps; do
    case "$d" in
      "$mod/worker"|"$mod/worker/"*|"$mod/paramserver"|"$mod/paramserver/"*|gorgonia.org/*)
        echo "import rule: $pkg depends on $d (coordinator must not)"; fail=1;;
    esac
  done
done < <(go list -f '{{.ImportPath}} {{join .Deps " "}}' ./coordinator/...)

while read -r pkg imports; do
  for d in $imports; do
    case "$d" in
      net|net/*|os|os/*|io/fs|syscall|google.golang.org/grpc|google.golang.org/grpc/*|github.com/hashicorp/raft*|database/*)
        echo "import rule: $pkg imports $d (the scheduler does no I/O)"; fail=1;;
    esac
  done
done < <(go list -f '{{.ImportPath}} {{join .Imports " "}}' ./coordinator/scheduler/...)

while read -r pkg imports; do
  case "$pkg" in "$mod/node"|"$mod/cmd/"*) continue;; esac
  has_coord=0; has_role=0
  for d in $imports; do
    case "$d" in
      "$mod/coordinator"|"$mod/coordinator/"*) has_coord=1;;
      "$mod/worker"|"$mod/worker/"*|"$mod/paramserver"|"$mod/paramserver/"*) has_role=1;;
    esac
  done
  if [ $has_coord = 1 ] && [ $has_role = 1 ]; then
    echo "import rule: $pkg wires the coordinator to a node role (only node/ and cmd/ may)"; fail=1
  fi
done < <(go list -f '{{.ImportPath}} {{join .Imports " "}}' ./...)

while read -r pkg imports; do
  for d in $imports; do
    case "$d" in
      "$mod/jobs") ;;
      *.*/*) echo "import rule: $pkg imports $d (modeldef imports only jobs and the standard library)"; fail=1;;
    esac
  done
done < <(go list -f '{{.ImportPath}} {{join .Imports " "}}' ./modeldef/...)

exit $fail
