#!/usr/bin/env bash
# What monitoring costs: requests per second of the static-site unikernel (unix target)
# built from a tree without the metrics counters (BASE, default: the merge base with main),
# from this tree (every connection, read, write, response and allocation counted), and from
# this tree with a `monitoring` device added; and the image size the device adds.
#
#   benches/monitoring.sh [DURATION_S] [RUNS]    (default: 10 s, 5 runs; medians, runs interleaved)
#   SPT=1 benches/monitoring.sh                   (also the spt image sizes)
#
# Needs wrk. The three unikernels run on loopback, one at a time, with the same wrk load
# (1 thread, 32 connections, keep-alive) on a 1 KiB page; the baseline is built by this
# tree's compose with COMPOSE_ROOT pointing at an export of BASE.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-10}; runs=${2:-5}
work=${BENCH_DIR:-/tmp/compose-bench-monitoring}
base=${BASE:-$(git -C "$root" merge-base HEAD main)}
mkdir -p "$work/public" "$work/base"
python3 -c "print('<!doctype html><title>small</title>' + '<p>compose</p>' * 60)" > "$work/public/small.html"
spec() { # file, extra device line
    cat > "$work/$1" <<KDL
unikernel bench
bootarg port type=u16 default=8080
bootarg mgmt-port type=u16 default=9090
tcp
assets public dir="public" compress=#false
$2
application site builtin=static-site assets=public port=(bootarg)"port" max-connections=4096
KDL
}
spec plain.kdl ""
spec monitored.kdl 'monitoring port=(bootarg)"mgmt-port"'
rm -rf "$work/base" && mkdir -p "$work/base"
git -C "$root" archive "$base" | tar -x -C "$work/base"
cargo build -q --release -p compose --manifest-path "$root/Cargo.toml"
compose="$root/target/release/compose"
build() { # name spec root target
    COMPOSE_ROOT=$3 COMPOSE_TARGET_DIR="$work/target-$1" COMPOSE_STORE="$work/store-$1" \
        "$compose" build "$work/$2" --target "$4" --out "$work/dist-$1-$4" --no-out-link >/dev/null
}
build base plain.kdl "$work/base" unix
build counted plain.kdl "$root" unix
build monitored monitored.kdl "$root" unix

"$work/dist-base-unix/bench" --port=18090 >/dev/null & p1=$!
"$work/dist-counted-unix/bench" --port=18091 >/dev/null & p2=$!
"$work/dist-monitored-unix/bench" --port=18092 --mgmt-port=18093 >/dev/null & p3=$!
trap 'kill $p1 $p2 $p3 2>/dev/null || true' EXIT
sleep 1

one() { # port -> "rps requests"
    wrk -t1 -c32 -d"${secs}s" "http://127.0.0.1:$1/small.html" |
        awk '/requests in/ { n = $1 } /Requests\/sec/ { r = $2 } END { print r, n }'
}
for _ in $(seq "$runs"); do
    for port in 18090 18091 18092; do echo "$port $(one $port)"; done
done > "$work/runs.txt"
median() { awk -v p="$1" '$1 == p { print $2 }' "$work/runs.txt" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# CPU time the unikernel spent per request over all runs (user + system, from /proc): less
# sensitive than req/s to what else the machine runs.
cpu_us() { # pid port
    local ticks total
    ticks=$(awk '{ print $14 + $15 }' "/proc/$1/stat")
    total=$(awk -v p="$2" '$1 == p { n += $3 } END { print n }' "$work/runs.txt")
    echo "$ticks * 1000000 / $(getconf CLK_TCK) / $total" | bc -l
}
b=$(median 18090); c=$(median 18091); m=$(median 18092)
cb=$(cpu_us $p1 18090); cc=$(cpu_us $p2 18091); cm=$(cpu_us $p3 18092)
printf '%-44s %10s %7s %12s %7s\n' "site unikernel (unix), 1 KiB page" "req/s" "ratio" "CPU us/req" "ratio"
printf '%-44s %10s %7s %12.2f %7s\n' "without counters ($(git -C "$root" rev-parse --short "$base"))" "$b" "1.000" "$cb" "1.000"
printf '%-44s %10s %7.3f %12.2f %7.3f\n' "with counters" "$c" "$(echo "$c / $b" | bc -l)" "$cc" "$(echo "$cc / $cb" | bc -l)"
printf '%-44s %10s %7.3f %12.2f %7.3f\n' "with counters and a monitoring device" "$m" "$(echo "$m / $b" | bc -l)" "$cm" "$(echo "$cm / $cb" | bc -l)"
curl -s "http://127.0.0.1:18093/metrics" | grep -E '^(http_responses_total\{status="2xx"\}|heap_peak_bytes) ' || true

size() { stat -c %s "$1"; }
echo
printf '%-44s %12s %12s\n' "image" "plain" "monitored"
printf '%-44s %12s %12s\n' "unix (bytes)" "$(size "$work/dist-counted-unix/bench")" "$(size "$work/dist-monitored-unix/bench")"
if [ "${SPT:-0}" = 1 ]; then
    build counted plain.kdl "$root" spt
    build monitored monitored.kdl "$root" spt
    printf '%-44s %12s %12s\n' "spt (bytes)" "$(size "$work/dist-counted-spt/bench.spt")" "$(size "$work/dist-monitored-spt/bench.spt")"
fi
