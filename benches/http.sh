#!/usr/bin/env bash
# Requests per second and p99 latency of the static-site unikernel (unix target) next to
# nginx serving the same directory on the same machine, for a small and a 1 MiB file.
#
#   benches/http.sh [DURATION_S] [RUNS]      (default: 10 s, 3 runs; the median is reported)
#
# Needs wrk and nginx (Debian: wrk, nginx-light). Both servers run on loopback, one worker
# each side of the comparison: the unikernel is single-threaded by design, so nginx runs
# with worker_processes 1 as well; a second line gives nginx with 2 workers for reference.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-10}; runs=${2:-3}
work=${BENCH_DIR:-/tmp/compose-bench-http}
mkdir -p "$work/public"
head -c 1048576 /dev/urandom > "$work/public/big.bin"
python3 -c "print('<!doctype html><title>small</title>' + '<p>compose</p>' * 60)" > "$work/public/small.html"
cat > "$work/site.kdl" <<KDL
unikernel bench
bootarg port type=u16 default=8080
tcp
assets public dir="public" compress=#false
application site builtin=static-site assets=public port=(bootarg)"port" max-connections=4096
KDL
cargo build -q --release -p compose --manifest-path "$root/Cargo.toml"
COMPOSE_TARGET_DIR="$work/target" "$root/target/release/compose" build "$work/site.kdl" --out "$work/dist" --no-out-link >/dev/null
"$work/dist/bench" --port=18080 >/dev/null &
uk=$!
nginx_conf() { cat > "$work/nginx-$1.conf" <<NGX
worker_processes $1;
daemon off;
pid $work/nginx-$1.pid;
error_log /dev/null;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    types { text/html html; application/octet-stream bin; }
    server { listen 127.0.0.1:$2; root $work/public; etag on; }
}
NGX
}
nginx_conf 1 18081; nginx_conf 2 18082
nginx -c "$work/nginx-1.conf" & ng1=$!
nginx -c "$work/nginx-2.conf" & ng2=$!
trap 'kill $uk $ng1 $ng2 2>/dev/null || true' EXIT
sleep 1

run() { # port path -> "rps p99ms" median over runs
    for _ in $(seq "$runs"); do
        wrk -t1 -c32 -d"${secs}s" --latency "http://127.0.0.1:$1/$2" | awk '
            /Requests\/sec/ { rps = $2 }
            /^ +99%/ { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 } p99 = v }
            END { printf "%s %s\n", rps, p99 }'
    done | sort -n | awk -v n="$runs" 'NR == int((n + 1) / 2) { print }'
}
printf '%-34s %12s %10s\n' "server / file" "req/s" "p99 ms"
for file in small.html big.bin; do
    for s in "compose unix:18080" "nginx 1 worker:18081" "nginx 2 workers:18082"; do
        name=${s%%:*}; port=${s##*:}
        read -r rps p99 < <(run "$port" "$file")
        printf '%-34s %12s %10s\n' "$name / $file" "$rps" "$p99"
    done
done
