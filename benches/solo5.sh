#!/usr/bin/env bash
# The Solo5 targets next to unix, on this machine:
#  * boot-to-exit of hello (`--times=1`), median of N runs (default 50), per target;
#  * image sizes of hello and site;
#  * CPU used by an idle, waiting unikernel (echo) over 5 s of wall time;
#  * requests per second of the site (a small page) with wrk, unix on loopback, hvt and spt
#    through a tap in a network namespace.
#
#   benches/solo5.sh [RUNS] [WRK_SECONDS]
#
# Needs root (namespaces), /dev/kvm for hvt, wrk. hvt runs under software virtualization
# here: compare ratios, not absolute figures.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-50}; secs=${2:-10}
work=${BENCH_DIR:-/tmp/compose-bench-solo5}
mkdir -p "$work"
export COMPOSE_STORE="$work/store" COMPOSE_TARGET_DIR="$work/target"
cargo build -q --release -p compose -p compose-hvt -p compose-spt --manifest-path "$root/Cargo.toml"
compose="$root/target/release/compose"
export COMPOSE_TENDER_DIR="$root/target/release"
declare -A entry
for t in unix hvt spt; do
    for s in hello echo site; do
        entry[$s-$t]=$(cd "$root" && "$compose" build "specs/$s.kdl" --target "$t" --no-out-link 2>/dev/null)
    done
done

median_ms() { sort -n | awk '{ a[NR] = $1 } END { printf "%.2f", a[int((NR + 1) / 2)] }'; }
boot() { # target -> one boot-to-exit time in ms
    local img="${entry[hello-$1]}/hello" s e
    case $1 in
        unix) s=$(date +%s%N); "$img" --times=1 >/dev/null; e=$(date +%s%N) ;;
        hvt) s=$(date +%s%N); "$COMPOSE_TENDER_DIR/compose-hvt" --mem=32 -- "$img" --times=1 >/dev/null; e=$(date +%s%N) ;;
        spt) s=$(date +%s%N); "$COMPOSE_TENDER_DIR/compose-spt" --mem=32 -- "$img" --times=1 >/dev/null; e=$(date +%s%N) ;;
    esac
    echo "$(( (e - s) / 1000 ))" | awk '{ printf "%.3f\n", $1 / 1000 }'
}
echo "== boot-to-exit of hello (median of $runs runs)"
for t in unix spt hvt; do
    m=$(for _ in $(seq "$runs"); do boot "$t"; done | median_ms)
    printf '%-6s %8s ms\n' "$t" "$m"
done

echo "== image sizes"
for t in unix hvt spt; do
    for s in hello site; do
        printf '%-6s %-6s %9d bytes\n' "$t" "$s" "$(stat -c %s "${entry[$s-$t]}/$s")"
    done
done

ns=compose-bench-$$
cleanup() { ip netns del "$ns" 2>/dev/null || true; kill "${pids[@]}" 2>/dev/null || true; }
pids=()
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" tuntap add dev tap0 mode tap
ip -n "$ns" addr add 10.78.0.1/24 dev tap0
ip -n "$ns" link set tap0 up

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
echo "== CPU of an idle echo unikernel over 5 s (ticks of 10 ms; 500 = one core busy)"
"${entry[echo-unix]}/echo" --port=17777 >/dev/null & p=$!; pids+=("$p"); sleep 1
a=$(cpu_ticks "$p"); sleep 5; b=$(cpu_ticks "$p"); printf '%-6s %4d ticks\n' unix "$((b - a))"; kill "$p"
for t in spt hvt; do
    ip netns exec "$ns" "$COMPOSE_TENDER_DIR/compose-$t" --mem=64 --net:service=tap0 -- "${entry[echo-$t]}/echo" --ipv4=10.78.0.2/24 --port=7 >/dev/null & p=$!; pids+=("$p"); sleep 2
    # Count any child of the tender too (spt used to run the guest in one).
    kids=$(pgrep -P "$p" || true)
    a=0; for q in $p $kids; do a=$((a + $(cpu_ticks "$q"))); done; sleep 5
    b=0; for q in $p $kids; do b=$((b + $(cpu_ticks "$q"))); done
    printf '%-6s %4d ticks\n' "$t" "$((b - a))"; kill "$p"; wait "$p" 2>/dev/null || true
done

echo "== site: requests per second for /index.html (wrk -t1 -c8 -d${secs}s)"
rps() { awk '/Requests\/sec/ { print $2 }'; }
"${entry[site-unix]}/site" --port=18088 >/dev/null & p=$!; pids+=("$p"); sleep 1
printf '%-6s %10s req/s\n' unix "$(wrk -t1 -c8 -d"${secs}s" http://127.0.0.1:18088/index.html | rps)"; kill "$p"
for t in spt hvt; do
    ip netns exec "$ns" "$COMPOSE_TENDER_DIR/compose-$t" --mem=64 --net:service=tap0 -- "${entry[site-$t]}/site" --ipv4=10.78.0.2/24 --port=80 >/dev/null & p=$!; pids+=("$p"); sleep 2
    printf '%-6s %10s req/s\n' "$t" "$(ip netns exec "$ns" wrk -t1 -c8 -d"${secs}s" http://10.78.0.2/index.html | rps)"
    kill "$p"; wait "$p" 2>/dev/null || true
done
