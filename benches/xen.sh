#!/usr/bin/env bash
# The xen target's figures, in compose's Xen sandbox (Xen 4.17 under QEMU's TCG emulator,
# composer/src/xen_sandbox.rs), next to hvt where that makes sense:
#  * image sizes of hello, echo and site on xen and on hvt;
#  * time from `xl create` to hello's greeting, median of RUNS guests in one boot;
#  * echo round trips per second over netfront, from a client in dom0, against the same
#    client on dom0's loopback (the ratio is what to quote: everything is emulated).
#
#   benches/xen.sh [RUNS] [TRIPS]        (defaults: 7 guests, 300 round trips)
#
# Needs what the sandbox needs (qemu-system-x86_64, apt-get, dpkg-deb, xz; see .ci/run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-7}; trips=${2:-300}
work=${BENCH_DIR:-/tmp/compose-bench-xen}
mkdir -p "$work"
export COMPOSE_STORE="$work/store" COMPOSE_TARGET_DIR="$work/target"
cargo build -q --release -p compose --manifest-path "$root/Cargo.toml"
compose="$root/target/release/compose"
declare -A entry
for t in xen hvt; do
    for s in hello echo site; do
        entry[$s-$t]=$(cd "$root" && "$compose" build "specs/$s.kdl" --target "$t" --no-out-link 2>/dev/null)
    done
done
echo "== image sizes (bytes)"
printf '%-6s %10s %10s %7s\n' spec xen hvt xen/hvt
for s in hello echo site; do
    x=$(stat -c %s "${entry[$s-xen]}/$s.xen"); h=$(stat -c %s "${entry[$s-hvt]}/$s.hvt")
    printf '%-6s %10d %10d %7.2f\n' "$s" "$x" "$h" "$(awk -v a="$x" -v b="$h" 'BEGIN { print a / b }')"
done
export XEN_BENCH_HELLO="${entry[hello-xen]}/hello.xen" XEN_BENCH_ECHO="${entry[echo-xen]}/echo.xen"
export HELLO_RUNS=$runs ECHO_TRIPS=$trips
export COMPOSE_XEN_SANDBOX=${COMPOSE_XEN_SANDBOX:-$root/target/xen-sandbox}
cargo bench -q -p compose --bench xen --manifest-path "$root/Cargo.toml"
