#!/usr/bin/env bash
# TLS figures of the `tls` device next to nginx with OpenSSL, on the same machine in the
# same run:
#   * handshakes/s, ECDSA P-256 and Ed25519 certificates: wrk over HTTPS with 8 connections
#     and `Connection: close` (a full handshake per request of a 3-byte file; openssl s_time,
#     one connection at a time, was client-bound here) against compose on unix (127.0.0.1),
#     compose on spt (a tap in a network namespace; the client runs inside it) and nginx
#     (1 worker, 127.0.0.1, the same certificate and key);
#   * HTTPS throughput of rustdoc's 53 KB std/index.html (the pinned toolchain's copy):
#     wrk over HTTPS with keep-alive, 1 thread, 8 connections;
#   * memory per TLS connection: 200 idle, completed TLS connections held open, the growth
#     of the unix process's / spt tender's VmRSS divided by 200;
#   * image size added by TLS: the spt and hvt images of specs/site.kdl and specs/site-https.kdl;
#   * with --leak: tests/tls.rs with 10,000 failed handshakes of each cheap kind on unix and
#     spt (COMPOSE_TLS_FAILURES=10000), and how long they took.
# Each figure is the median of ROUNDS rounds (default 3) of SECS seconds (default 5), the
# servers taking turns; the ratio is compose / nginx.
#
#   benches/tls.sh [--secs N] [--rounds N] [--leak]
#
# Needs: openssl, wrk, nginx (nginx-light), python3, iproute2; root for spt (namespace, tap).
# Work dir: target/tls-bench; builds in target/compose-tests (the tests'), or $COMPOSE_TARGET_DIR.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=5; rounds=3; leak=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --secs) secs=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --leak) leak=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "tls.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
for tool in openssl wrk nginx python3 ip; do command -v $tool >/dev/null || { echo "tls.sh: needs $tool" >&2; exit 1; }; done
work=$root/target/tls-bench
mkdir -p "$work/public/std"
# Builds share the tests' target dir (their dependencies are built there already).
export COMPOSE_TARGET_DIR=${COMPOSE_TARGET_DIR:-$root/target/compose-tests} COMPOSE_STORE=$work/store
page=$(ls "$HOME"/.rustup/toolchains/"$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$root/rust-toolchain.toml")"-*/share/doc/rust/html/std/index.html 2>/dev/null | head -1)
[[ -f $page ]] || { echo "tls.sh: no rustdoc std/index.html in the pinned toolchain (rustup component add rust-docs)" >&2; exit 1; }
cp "$page" "$work/public/std/index.html"
printf 'ok\n' > "$work/public/hs.txt"
cd "$work"
# Certificates: a CA, P-256 and Ed25519 server certificates for 127.0.0.1 and the spt guest.
guest=10.77.41.2
if [[ ! -f ed.pem ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 30 -subj /CN=bench-ca 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:%s\n' $guest > ext
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out p256.key
    openssl genpkey -algorithm ed25519 -out ed.key
    for k in p256 ed; do
        openssl req -new -key $k.key -out $k.csr -subj /CN=localhost
        openssl x509 -req -in $k.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $k.crt -days 30 -extfile ext 2>/dev/null
        cat $k.crt $k.key > $k.pem
    done
fi
cat > bench.kdl <<'KDL'
unikernel tlsbench {
    target unix
    memory "256MiB"
}
bootarg port type=u16 default=8443
bootarg ipv4 type=ipv4-cidr default="127.0.0.1/8"
netif service
ipv4 stack net=service address=(bootarg)"ipv4"
tcp
secret tls
tls https tcp=tcp secret=tls max-handshakes=256
assets public dir="public" compress=#false
application site builtin=static-site tcp=https assets=public port=(bootarg)"port" max-connections=1024
KDL
cargo build -q --release -p compose --manifest-path "$root/Cargo.toml"
compose=$root/target/release/compose
echo "building (unix, spt) ..." >&2
"$compose" build bench.kdl --no-out-link >/dev/null
"$compose" build bench.kdl --target spt --no-out-link >/dev/null
ns=tlsbench-$$
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del $ns 2>/dev/null || true
}
trap cleanup EXIT
ip netns add $ns
ip -n $ns link set lo up
ip -n $ns tuntap add dev tap0 mode tap
ip -n $ns addr add 10.77.41.1/24 dev tap0
ip -n $ns link set tap0 up
in_ns() { ip netns exec $ns "$@"; }

rss() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
image_pid() { # image path fragment -> the pid of the process running it (the spt tender, the unix process)
    local p
    for _ in $(seq 600); do
        p=$(pgrep -f -- "$1" | head -1)
        [[ -n $p ]] && { echo "$p"; return; }
        sleep 0.1
    done
    echo "tls.sh: no process runs $1" >&2; exit 1
}
wait_port() { # wrapper... host port
    for _ in $(seq 300); do
        "${@:1:$#-2}" bash -c "exec 3<>/dev/tcp/${*: -2:1}/${*: -1}" 2>/dev/null && return
        sleep 0.1
    done
    echo "tls.sh: nothing listens on ${*: -2:1}:${*: -1}" >&2; exit 1
}

# nginx, 1 worker, with the certificate of the round.
nginx_conf() { # cert port
    mkdir -p "$work/nginx-$1"
    cat > "$work/nginx-$1/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/nginx-$1/nginx.pid;
error_log $work/nginx-$1/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 100000;
    types { text/html html; text/plain txt; }
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    server {
        listen 127.0.0.1:$2 ssl;
        ssl_certificate $work/$1.crt;
        ssl_certificate_key $work/$1.key;
        root $work/public;
    }
}
NGX
    echo "$work/nginx-$1/nginx.conf"
}

handshakes() { # wrapper... host:port -> handshakes/s over $secs: wrk, 8 connections, each
    # request on a new connection (Connection: close) for a 3-byte file
    "${@:1:$#-1}" wrk -t1 -c8 -d"${secs}s" -H "Connection: close" "https://${*: -1}/hs.txt" 2>&1 |
        awk '/Requests\/sec/ { print $2 }'
}
throughput() { # wrapper... url -> "req/s MiB/s"
    "${@:1:$#-1}" wrk -t1 -c8 -d"${secs}s" "${*: -1}" 2>&1 | awk '
        /Requests\/sec/ { r = $2 }
        /Transfer\/sec/ { v = $2; if (v ~ /GB$/) { sub(/GB/, "", v); v *= 1024 } else if (v ~ /MB$/) { sub(/MB/, "", v) } else if (v ~ /KB$/) { sub(/KB/, "", v); v /= 1024 } m = v }
        END { printf "%s %.1f\n", r, m }'
}
hold_conns() { # wrapper... host port n -> holds n TLS connections open 3 s after printing "ready"
    "${@:1:$#-3}" python3 - "${*: -3:1}" "${*: -2:1}" "${*: -1}" "$work/ca.pem" <<'PY'
import socket, ssl, sys, time
host, port, n, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
conns = []
for _ in range(n):
    c = ctx.wrap_socket(socket.create_connection((host, port), timeout=30), server_hostname="localhost")
    conns.append(c)
print("ready", flush=True)
time.sleep(3)
PY
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print 0 }'; }

declare -A hs tput mem
for cert in p256 ed; do
    # compose unix
    "$compose" run bench.kdl --no-out-link --secret tls=@"$work/$cert.pem" -- --port=18443 >/dev/null 2>&1 &
    cpid=$!; pids+=($cpid)
    # compose spt
    in_ns "$compose" run bench.kdl --target spt --no-out-link --net service=tap0 --secret tls=@"$work/$cert.pem" -- --ipv4=$guest/24 --port=443 >/dev/null 2>&1 &
    spid=$!; pids+=($spid)
    conf=$(nginx_conf $cert 18444)
    nginx -c "$conf" & npid=$!; pids+=($npid)
    wait_port env 127.0.0.1 18443; wait_port in_ns $guest 443; wait_port env 127.0.0.1 18444
    tender=$(image_pid "tlsbench-spt/tlsbench.spt"); upid=$(image_pid "tlsbench-unix/tlsbench ")
    pids+=($tender $upid)
    for r in $(seq "$rounds"); do
        hs[unix-$cert]+="$(handshakes env 127.0.0.1:18443) "
        hs[spt-$cert]+="$(handshakes in_ns $guest:443) "
        hs[nginx-$cert]+="$(handshakes env 127.0.0.1:18444) "
        if [[ $cert == p256 ]]; then
            tput[unix]+="$(throughput env https://127.0.0.1:18443/std/index.html),"
            tput[spt]+="$(throughput in_ns https://$guest/std/index.html),"
            tput[nginx]+="$(throughput env https://127.0.0.1:18444/std/index.html),"
        fi
    done
    if [[ $cert == p256 ]]; then
        for s in unix spt; do
            if [[ $s == unix ]]; then pid=$upid; w=(env); h=127.0.0.1; p=18443; else pid=$tender; w=(in_ns); h=$guest; p=443; fi
            before=$(rss "$pid")
            exec 4< <(hold_conns "${w[@]}" $h $p 200)
            read -r _ <&4
            after=$(rss "$pid")
            mem[$s]=$(( (after - before) * 1024 / 200 ))
            cat <&4 >/dev/null || true
        done
    fi
    kill "$cpid" "$spid" "$npid" "$tender" "$upid" 2>/dev/null || true
    wait "$cpid" "$spid" "$npid" 2>/dev/null || true
    pids=()
done

echo
echo "## TLS: handshakes/s (wrk -c8, a new connection per request, ${secs}s, median of $rounds)"
printf '%-12s %12s %12s %12s %10s %10s\n' cert "compose unix" "compose spt" "nginx" "unix/ngx" "spt/ngx"
for cert in p256 ed; do
    u=$(tr ' ' '\n' <<<"${hs[unix-$cert]}" | median); s=$(tr ' ' '\n' <<<"${hs[spt-$cert]}" | median); n=$(tr ' ' '\n' <<<"${hs[nginx-$cert]}" | median)
    printf '%-12s %12s %12s %12s %10s %10s\n' "$cert" "$u" "$s" "$n" "$(awk -v a="$u" -v b="$n" 'BEGIN { printf "%.2f", b ? a / b : 0 }')" "$(awk -v a="$s" -v b="$n" 'BEGIN { printf "%.2f", b ? a / b : 0 }')"
done
echo
echo "## HTTPS throughput, std/index.html ($(stat -c %s public/std/index.html) bytes), wrk -t1 -c8 keep-alive, P-256"
printf '%-14s %10s %10s %10s\n' server "req/s" "MiB/s" "/nginx"
nr=$(tr ',' '\n' <<<"${tput[nginx]}" | awk 'NF { print $1 }' | median)
for s in unix spt nginx; do
    r=$(tr ',' '\n' <<<"${tput[$s]}" | awk 'NF { print $1 }' | median)
    m=$(tr ',' '\n' <<<"${tput[$s]}" | awk 'NF { print $2 }' | median)
    printf '%-14s %10s %10s %10s\n' "$s" "$r" "$m" "$(awk -v a="$r" -v b="$nr" 'BEGIN { printf "%.2f", b ? a / b : 0 }')"
done
echo
echo "## Memory per idle TLS connection (200 held open; VmRSS growth / 200)"
echo "unix process: ${mem[unix]} bytes; spt tender: ${mem[spt]} bytes"
echo
echo "## Image size added by TLS (specs/site.kdl vs specs/site-https.kdl)"
for t in spt hvt; do
    a=$("$compose" build "$root/specs/site.kdl" --target $t --no-out-link | tail -1)
    b=$("$compose" build "$root/specs/site-https.kdl" --target $t --no-out-link | tail -1)
    sa=$(stat -c %s "$a"/site.$t); sb=$(stat -c %s "$b"/site-https.$t)
    echo "$t: site $sa bytes, site-https $sb bytes, +$(( (sb - sa) / 1024 )) KiB"
done
if [[ $leak == 1 ]]; then
    echo
    echo "## 10,000 failed handshakes of each cheap kind (tests/tls.rs)"
    cd "$root"
    start=$(date +%s)
    COMPOSE_TLS_FAILURES=10000 cargo test -q -p compose --test tls -- --nocapture --test-threads=1 2>&1 | grep -E "^tls|test result|panicked" || true
    echo "took $(( $(date +%s) - start )) s"
fi
