#!/usr/bin/env bash
# A real website served by compose next to nginx, side by side in the same run: the Rust
# standard library's HTML documentation (rust-docs: ~52,000 files, ~0.8 GB), built with the
# block and the embedded backends, served on unix over loopback and on spt over a tap.
#
#   benches/realsite.sh [--quick] [--targets unix,spt] [--backends block,embed]
#                       [--duration S] [--warmup S] [--rounds N] [--connections N]
#                       [--threads N] [--mix N] [--seed N] [--work DIR] [--out FILE]
#
# For each target, three cases: `/std/index.html` (53 KB), the largest file of the tree, and a
# random mix of 2000 files (a wrk Lua script generated from the tree's sorted file list with a
# fixed seed; every request walks the same sequence). Every case runs a warm-up against each
# server, then N rounds that alternate between the servers (compose, nginx, compose, ...), so
# that the machine's load falls on both alike; the table gives the medians (of each figure on
# its own) of req/s, MiB/s (wrk's Transfer/sec) and p99 latency (wrk --latency), the errors
# over all rounds (socket errors and non-2xx/3xx answers), and the ratios compose/nginx
# (> 1 is better for compose in req/s and MiB/s; < 1 is better in p99).
#
#  * unix: each compose image (one per backend) on 127.0.0.1, and nginx on 127.0.0.1;
#  * spt:  the unikernel (block backend by default: an embedded 0.9 GB archive would have to
#    fit into guest memory; `--backends block,embed` tries it with 2 GiB) on a tap in network
#    namespace A, nginx in network namespace B reached from A over a veth pair; wrk runs in A,
#    so both servers are one hop from the client.
#
# nginx: 1 worker, sendfile, tcp_nopush, tcp_nodelay, open_file_cache, access log off, keep-alive
# without a request limit, a private prefix, pid and temp paths under the work dir. Before
# measuring, every server must return the two single files byte for byte (else the run stops),
# and every file of the mix is fetched once (any answer but 200 is a warning in the results).
# Namespaces, taps and processes are removed on exit, on failure and on Ctrl-C (a run killed
# with SIGKILL leaves namespaces that the next run removes).
#
# Needs: wrk, nginx, curl, python3, GNU time; root for the spt part (namespaces, a tap).
# Builds go to a store and build folder under the work dir (default target/realsite, several
# GB for all three builds); later runs find them in the store. Full run: ~10 min with warm
# builds (cold builds add several minutes). `--quick`: 3 s rounds, 1 round, block only.
# Results: printed, and written as markdown to --out (default target/realsite.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

targets=unix,spt; backends=""; duration=8; warmup=2; rounds=3; conns=32; threads=1
mix=2000; seed=11; work=""; out="$root/target/realsite.md"
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "realsite: $*" >&2; exit 1; }
num() { [[ $2 =~ ^[0-9]+$ && $2 -gt 0 ]] || die "$1 wants a positive whole number, got '$2'"; }
while [[ $# -gt 0 ]]; do
    opt=$1
    case $opt in
        --quick) duration=3; warmup=1; rounds=1; [[ -n $backends ]] || backends=block; shift; continue ;;
        -h|--help) usage; exit 0 ;;
    esac
    [[ $# -ge 2 ]] || die "$opt wants a value (see --help)"
    case $opt in
        --targets) targets=$2 ;;
        --backends) backends=$2 ;;
        --duration) num "$opt" "$2"; duration=$2 ;;
        --warmup) num "$opt" "$2"; warmup=$2 ;;
        --rounds) num "$opt" "$2"; rounds=$2 ;;
        --connections) num "$opt" "$2"; conns=$2 ;;
        --threads) num "$opt" "$2"; threads=$2 ;;
        --mix) num "$opt" "$2"; mix=$2 ;;
        --seed) [[ $2 =~ ^[0-9]+$ ]] || die "--seed wants a whole number"; seed=$2 ;;
        --work) work=$2 ;;
        --out) out=$2 ;;
        *) die "unknown option $opt (see --help)" ;;
    esac
    shift 2
done
IFS=, read -r -a target_list <<<"$targets"
for t in "${target_list[@]}"; do [[ $t == unix || $t == spt ]] || die "--targets: unix and/or spt, not '$t'"; done
if [[ -n $backends ]]; then
    IFS=, read -r -a backend_list <<<"$backends"
    for b in "${backend_list[@]}"; do [[ $b == block || $b == embed ]] || die "--backends: block and/or embed, not '$b'"; done
fi
backends_for() { # target -> the backends it is built with
    if [[ -n $backends ]]; then echo "${backend_list[*]}"
    elif [[ $1 == unix ]]; then echo "block embed"
    else echo "block"; fi
}
for tool in wrk nginx curl python3 ip; do command -v "$tool" >/dev/null || die "needs $tool (Debian: wrk nginx-light curl python3 iproute2)"; done
[[ -x /usr/bin/time ]] || die "needs GNU time (/usr/bin/time; Debian: time)"
if [[ " ${target_list[*]} " == *" spt "* ]] && [[ $(id -u) != 0 ]]; then
    die "the spt part needs root (network namespaces and a tap); run as root or with --targets unix"
fi
work=${work:-$root/target/realsite}
mkdir -p "$work" "$(dirname "$out")"
work=$(cd "$work" && pwd)
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
warnings=()
warn() { log "WARNING $*"; warnings+=("$*"); }

# ---- processes and namespaces, removed on every way out -----------------------------------
pids=()                         # everything this script starts in the background
ns_a=crs-a-$$ ns_b=crs-b-$$     # crs: compose realsite; the pid makes them this run's
ns_made=()
stop_pid() { # pid: TERM, wait up to 5 s, then KILL (and its children first-hand)
    local p=$1 kids i
    kill -0 "$p" 2>/dev/null || return 0
    kids=$(pgrep -P "$p" 2>/dev/null || true)
    kill "$p" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    # shellcheck disable=SC2086
    kill -9 "$p" $kids 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
drop_ns() { # name: kill what still runs in it, then delete it (its tap and veth go with it)
    local n=$1 p
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
}
cleanup() {
    local rc=$? p n
    trap - EXIT INT TERM
    for p in "${pids[@]}"; do stop_pid "$p"; done
    for n in "${ns_made[@]}"; do drop_ns "$n"; done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Namespaces left by a run that was killed outright (its pid is gone).
for n in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E '^crs-[ab]-[0-9]+$' || true); do
    kill -0 "${n##*-}" 2>/dev/null || { log "removing $n, left by an earlier run"; drop_ns "$n"; }
done

# ---- the site --------------------------------------------------------------------------
sysroot=$(cd "$root" && rustc --print sysroot)
docs=$sysroot/share/doc/rust/html
if [[ ! -f $docs/std/index.html ]]; then
    log "rust-docs is not installed: rustup component add rust-docs"
    (cd "$root" && rustup component add rust-docs) >&2
    [[ -f $docs/std/index.html ]] || die "no rust-docs tree at $docs after rustup component add rust-docs"
fi
site=$work/site
public=$site/public
stamp="$docs $(find "$docs" -type f | wc -l) $(du -sb "$docs" | cut -f1)"
if [[ ! -f $site/.stamp || $(cat "$site/.stamp") != "$stamp" ]]; then
    log "linking $docs into $public"
    rm -rf "$site"; mkdir -p "$site"
    # Hard links where the filesystem allows (no space, no time), else a copy. Either way a
    # tree of its own: no symbolic link leads out of it.
    cp -al "$docs" "$public" 2>/dev/null || { rm -rf "$public"; cp -a "$docs" "$public"; }
    echo "$stamp" >"$site/.stamp"
fi
outside=$(find "$public" -type l -printf '%p\n' | while read -r l; do
    case $(realpath -m "$l") in "$public"/*) ;; *) echo "$l" ;; esac; done | head -3)
[[ -z $outside ]] || die "symbolic links leave the tree: $outside"
read -r files bytes < <(find "$public" -type f -printf '%s\n' | awk '{ n++; s += $1 } END { print n, s }')
read -r big_size big < <(find "$public" -type f -printf '%s %P\n' | sort -n | tail -1)
mixlua=$work/mix-$mix-$seed.lua
python3 - "$public" "$mix" "$seed" "$mixlua" <<'PY'
import json, os, random, sys, urllib.parse
top, n, seed, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
files = []
for d, dirs, names in os.walk(top):
    dirs.sort()
    files += [os.path.relpath(os.path.join(d, f), top) for f in names]
files.sort()
pick = random.Random(seed).sample(files, min(n, len(files)))
# Encoded as a browser would: only what a path segment may not hold (RFC 3986 pchar).
urls = ["/" + urllib.parse.quote(p, safe="/!$&'()*+,;=:@~") for p in pick]
with open(out + ".txt", "w") as f:
    f.write("\n".join(urls) + "\n")
with open(out, "w") as f:
    f.write("-- %d files of the tree, seed %d; each thread walks the list in order\n" % (len(urls), seed))
    f.write("local paths = {\n" + "".join("  %s,\n" % json.dumps(u) for u in urls) + "}\n")
    f.write("local i = 0\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n")
PY
enc() { python3 -c 'import sys, urllib.parse; print("/" + urllib.parse.quote(sys.argv[1], safe="/!$&'"'"'()*+,;=:@~"))' "$1"; }
big_url=$(enc "$big")
cat >"$site/realsite.kdl" <<'KDL'
// The Rust standard library's documentation (rust-docs), served by the built-in static site.
unikernel realsite {
    target unix
    memory "64MiB"
}
param backend default="block" doc="embed or block"
bootarg port type=u16 default=8080 doc="TCP port to serve on"
bootarg ipv4 type=ipv4-cidr default="127.0.0.1/8" doc="the unikernel's address"
netif service
ipv4 stack net=service address=(bootarg)"ipv4"
tcp
assets public dir="public" backend=(param)"backend"
application site builtin=static-site assets=public port=(bootarg)"port"
KDL
# An embedded archive is loaded into guest memory on spt: give it room.
sed 's/memory "64MiB"/memory "2GiB"/' "$site/realsite.kdl" >"$site/realsite-big.kdl"

# ---- builds, through the compose CLI ---------------------------------------------------
export COMPOSE_STORE=$work/store COMPOSE_TARGET_DIR=$work/build COMPOSE_TENDER_DIR=$root/target/release
log "building compose and its tenders (release)"
cargo build -q --release -p compose -p compose-spt --manifest-path "$root/Cargo.toml"
compose=$root/target/release/compose
builds=()   # "target backend seconds peak-MiB"
declare -A result
for t in "${target_list[@]}"; do
    for b in $(backends_for "$t"); do
        spec=$site/realsite.kdl
        [[ $t == spt && $b == embed ]] && spec=$site/realsite-big.kdl
        log "compose build ($t, $b)"
        if ! /usr/bin/time -f "%e %M" -o "$work/time-$t-$b" "$compose" build "$spec" --target "$t" \
            --arg backend="$b" --out-link "$work/result-$t-$b" >"$work/build-$t-$b.log" 2>&1; then
            tail -30 "$work/build-$t-$b.log" >&2; die "compose build ($t, $b) failed (log: $work/build-$t-$b.log)"
        fi
        read -r secs kib <"$work/time-$t-$b"
        builds+=("$t $b $secs $((kib / 1024))")
        result[$t-$b]=$work/result-$t-$b
    done
done

# ---- servers -----------------------------------------------------------------------------
nginx_conf() { # name listen-address -> config path
    local d=$work/nginx/$1
    mkdir -p "$d/tmp"
    local user="" types="types { text/html html; text/css css; application/javascript js; }"
    [[ $(id -u) == 0 ]] && user="user root;"   # the tree may sit under a 0700 home
    [[ -f /etc/nginx/mime.types ]] && types="include /etc/nginx/mime.types;"
    cat >"$d/nginx.conf" <<NGX
worker_processes 1;
$user
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 8192; }
http {
    $types
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 10000000;
    open_file_cache max=100000 inactive=120s;
    open_file_cache_valid 120s;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    server {
        listen $2;
        root $public;
    }
}
NGX
    echo "$d/nginx.conf"
}
in_ns() { # namespace|"" command... : runs the command there (or here)
    local n=$1; shift
    if [[ -n $n ]]; then ip netns exec "$n" "$@"; else "$@"; fi
}
free_port() { # from -> the first port from there nothing listens on
    local p=$1
    while [[ -n $(ss -Hltn "sport = :$p" 2>/dev/null) ]]; do p=$((p + 1)); done
    echo "$p"
}
wait_http() { # ns url pid log: until it answers, the process dies, or 120 s pass
    local i
    for i in $(seq 240); do
        in_ns "$1" curl -fso /dev/null --max-time 2 "$2" && return 0
        kill -0 "$3" 2>/dev/null || { tail -20 "$4" >&2; die "the server for $2 exited before answering (log: $4)"; }
        sleep 0.5
    done
    die "no answer from $2 within 120 s (log: $4)"
}
check_site() { # ns base-url name: the same bytes as the tree, and a 200 for every mix file
    local ns=$1 base=$2 name=$3 f codes bad
    for f in /std/index.html "$big_url"; do
        in_ns "$ns" curl -fsS --max-time 60 -o "$work/fetched" "$base$f" || die "$name: GET $f failed"
        cmp -s "$work/fetched" "$public/$(python3 -c 'import sys, urllib.parse; print(urllib.parse.unquote(sys.argv[1][1:]))' "$f")" \
            || die "$name: $f differs from the file in the tree"
    done
    rm -f "$work/fetched"
    sed "s|^|url = \"$base|; s|$|\"\noutput = \"/dev/null\"|" "$mixlua.txt" >"$work/mix.curl"
    codes=$(in_ns "$ns" curl -s --max-time 300 -K "$work/mix.curl" -w '%{http_code}\n' || true)
    bad=$(grep -vc '^200$' <<<"$codes" || true)
    [[ $(wc -l <<<"$codes") -eq $(wc -l <"$mixlua.txt") && $bad -eq 0 ]] \
        || warn "$name: $bad of the $(wc -l <"$mixlua.txt") mix files do not answer 200 (line: status of the first: $(grep -vn '^200$' <<<"$codes" | head -3 | tr '\n' ' '))"
    log "$name: /std/index.html and $big identical to the tree; mix checked"
}

# ---- wrk ---------------------------------------------------------------------------------
wrk_once() { # ns url seconds [script] -> "rps MiB/s p99ms errors"
    local ns=$1 url=$2 secs=$3 script=${4:-}
    local args=(-t"$threads" -c"$conns" -d"${secs}s" --timeout 30s --latency)
    [[ -n $script ]] && args+=(-s "$script")
    in_ns "$ns" wrk "${args[@]}" "$url" 2>&1 | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
                         if (v ~ /m$/) return v * 60000; if (v ~ /h$/) return v * 3600000; return v * 1000 }
        function mib(v) { if (v ~ /GB$/) return v * 1024; if (v ~ /MB$/) return v + 0
                          if (v ~ /KB$/) return v / 1024; return v / 1048576 }
        /Requests\/sec/ { rps = $2 }
        /Transfer\/sec/ { mb = mib($2) }
        /^ +99%/ { p99 = ms($2) }
        /Socket errors/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx/ { err += $5 }
        END { if (rps == "") { print "0 0 0 -1" } else printf "%.1f %.2f %.3f %d\n", rps, mb, p99, err }'
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print 0 }'; }

rows=()      # "target|case|server|rps|mib|p99|errors"
died=()
declare -A alive_pid
bench_case() { # target case-name path script server...  (server: "name|ns|base-url")
    local target=$1 cname=$2 path=$3 script=$4; shift 4
    local s name ns base r one
    declare -A res=()
    for s in "$@"; do
        IFS='|' read -r name ns base <<<"$s"
        wrk_once "$ns" "$base$path" "$warmup" "$script" >/dev/null
    done
    for r in $(seq "$rounds"); do
        for s in "$@"; do
            IFS='|' read -r name ns base <<<"$s"
            if [[ -n ${alive_pid[$name]:-} ]] && ! kill -0 "${alive_pid[$name]}" 2>/dev/null; then continue; fi
            one=$(wrk_once "$ns" "$base$path" "$duration" "$script")
            res[$name]+="$one"$'\n'
            log "$target / $cname / $name, round $r: $one (req/s MiB/s p99-ms errors)"
        done
    done
    for s in "$@"; do
        IFS='|' read -r name ns base <<<"$s"
        local rps mib p99 err dead=""
        if [[ -n ${alive_pid[$name]:-} ]] && ! kill -0 "${alive_pid[$name]}" 2>/dev/null; then
            dead=" (DIED)"; died+=("$name during $cname")
        fi
        rps=$(awk 'NF { print $1 }' <<<"${res[$name]:-}" | median)
        mib=$(awk 'NF { print $2 }' <<<"${res[$name]:-}" | median)
        p99=$(awk 'NF { print $3 }' <<<"${res[$name]:-}" | median)
        err=$(awk 'NF { e += ($4 < 0 ? 0 : $4) } END { print e + 0 }' <<<"${res[$name]:-}")
        rows+=("$target|$cname|$name$dead|$rps|$mib|$p99|$err")
    done
}

load_before=$(uptime)
started=$(date +%s)
cases=("/std/index.html|/std/index.html|" "largest file|$big_url|" "mix of $mix files|/|$mixlua")

start_server() { # name ns log command... -> sets $spid, the server's own pid
    local name=$1 ns=$2 lg=$3; shift 3
    # Simple commands, so that $! is the server (ip netns exec and compose run exec it).
    if [[ -n $ns ]]; then ip netns exec "$ns" "$@" >"$lg" 2>&1 & else "$@" >"$lg" 2>&1 & fi
    spid=$!; pids+=("$spid"); alive_pid[$name]=$spid
}

for t in "${target_list[@]}"; do
    servers=()
    if [[ $t == unix ]]; then
        port=$(free_port 18480)
        for b in $(backends_for unix); do
            name="compose unix $b"
            start_server "$name" "" "$work/run-unix-$b.log" "$compose" run "${result[unix-$b]}" -- --port="$port"
            wait_http "" "http://127.0.0.1:$port/std/index.html" "$spid" "$work/run-unix-$b.log"
            servers+=("$name||http://127.0.0.1:$port")
            port=$(free_port $((port + 1)))
        done
        conf=$(nginx_conf unix "127.0.0.1:$port")
        start_server "nginx unix" "" "$work/nginx/unix/stderr.log" nginx -p "$work/nginx/unix" -e "$work/nginx/unix/error.log" -c "$conf"
        wait_http "" "http://127.0.0.1:$port/std/index.html" "$spid" "$work/nginx/unix/error.log"
        servers+=("nginx unix||http://127.0.0.1:$port")
    else
        ip netns add "$ns_a"; ns_made+=("$ns_a")
        ip netns add "$ns_b"; ns_made+=("$ns_b")
        ip -n "$ns_a" link set lo up
        ip -n "$ns_b" link set lo up
        ip -n "$ns_a" link add veth0 type veth peer name veth1 netns "$ns_b"
        ip -n "$ns_a" addr add 10.81.1.1/24 dev veth0
        ip -n "$ns_b" addr add 10.81.1.2/24 dev veth1
        ip -n "$ns_a" link set veth0 up
        ip -n "$ns_b" link set veth1 up
        i=0
        for b in $(backends_for spt); do
            # One tap per unikernel, each its own subnet: tapI is 10.81.(10+I).1, the guest .2.
            tap=tap$i net=10.81.$((10 + i))
            ip -n "$ns_a" tuntap add dev "$tap" mode tap
            ip -n "$ns_a" addr add "$net.1/24" dev "$tap"
            ip -n "$ns_a" link set "$tap" up
            name="compose spt $b"
            start_server "$name" "$ns_a" "$work/run-spt-$b.log" "$compose" run "${result[spt-$b]}" --net service="$tap" -- --ipv4="$net.2/24" --port=80
            wait_http "$ns_a" "http://$net.2/std/index.html" "$spid" "$work/run-spt-$b.log"
            servers+=("$name|$ns_a|http://$net.2")
            i=$((i + 1))
        done
        conf=$(nginx_conf spt "10.81.1.2:80")
        start_server "nginx netns" "$ns_b" "$work/nginx/spt/stderr.log" nginx -p "$work/nginx/spt" -e "$work/nginx/spt/error.log" -c "$conf"
        wait_http "$ns_a" "http://10.81.1.2/std/index.html" "$spid" "$work/nginx/spt/error.log"
        servers+=("nginx netns|$ns_a|http://10.81.1.2")
    fi
    for s in "${servers[@]}"; do
        IFS='|' read -r name ns base <<<"$s"
        check_site "$ns" "$base" "$name"
    done
    for c in "${cases[@]}"; do
        IFS='|' read -r cname path script <<<"$c"
        bench_case "$t" "$cname" "$path" "$script" "${servers[@]}"
    done
    # This target's servers stop before the next target is measured.
    for p in "${pids[@]}"; do stop_pid "$p"; done
    pids=()
    if [[ $t == spt ]]; then drop_ns "$ns_a"; drop_ns "$ns_b"; ns_made=(); fi
done
load_after=$(uptime)

# ---- the table ---------------------------------------------------------------------------
{
    echo "# compose vs nginx on a real site (rust-docs)"
    echo
    echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), compose $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (with local changes)'), $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }'), $(nproc) cores"
    echo "- site: $docs: $files files, $((bytes / 1048576)) MiB"
    echo "- wrk -t$threads -c$conns -d${duration}s --timeout 30s --latency; warm-up ${warmup}s; rounds: $rounds, alternating between the servers; medians"
    echo "- largest file: /$big ($big_size B); mix: $mix files drawn with seed $seed ($mixlua)"
    echo "- load before: ${load_before#*load average: }; after: ${load_after#*load average: }; measuring took $(( $(date +%s) - started )) s"
    echo "- unix: loopback (127.0.0.1); spt: the unikernel on a tap in netns A, nginx in netns B over a veth pair, wrk in A"
    echo "- builds (this run; a result found in the store costs a few seconds):$(for b in "${builds[@]}"; do read -r bt bb bs bm <<<"$b"; printf ' %s/%s %s s, %s MiB peak;' "$bt" "$bb" "$bs" "$bm"; done)"
    echo
    echo "| target | case | server | req/s | MiB/s | p99 ms | errors | req/s ratio | MiB/s ratio | p99 ratio |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for r in "${rows[@]}"; do
        IFS='|' read -r t c s rps mib p99 err <<<"$r"
        base=""; for q in "${rows[@]}"; do
            IFS='|' read -r qt qc qs qr qm qp _ <<<"$q"
            [[ $qt == "$t" && $qc == "$c" && $qs == nginx* ]] && base="$qr $qm $qp"
        done
        ratios="baseline | |"
        if [[ $s != nginx* && -n $base ]]; then
            ratios=$(awk -v a="$rps $mib $p99" -v b="$base" 'BEGIN { split(a, x, " "); split(b, y, " ")
                for (i = 1; i <= 3; i++) r[i] = (y[i] > 0 ? sprintf("%.2f×", x[i] / y[i]) : "-")
                printf "%s | %s | %s", r[1], r[2], r[3] }')
        fi
        # No response completed (a large file in a short round): no latency to show.
        if awk -v r="$rps" 'BEGIN { exit !(r == 0) }'; then
            p99="-"; [[ $s == nginx* ]] || ratios="${ratios% | *} | -"
        fi
        echo "| $t | $c | $s | $rps | $mib | $p99 | $err | $ratios |"
    done
    echo
    echo "Ratios are compose/nginx in the same run: above 1 is better for compose in req/s and MiB/s, below 1 in p99."
    echo "errors: socket errors (connect, read, write, timeout) plus non-2xx/3xx answers, summed over the rounds."
    if printf '%s\n' "${rows[@]}" | awk -F'|' '$4 == 0 { z = 1 } END { exit !z }'; then
        echo "req/s 0.0 and p99 -: no response completed within a round (each connection was still"
        echo "receiving its first file); MiB/s counts the bytes received all the same. Longer rounds"
        echo "(--duration) or fewer connections (--connections) give such a case completed requests."
    fi
    for w in "${warnings[@]}"; do echo; echo "**Warning:** $w"; done
    if [[ ${#died[@]} -gt 0 ]]; then echo; echo "**Servers that died:** ${died[*]}"; fi
} >"$out"
cat "$out"
log "results written to $out"
[[ ${#died[@]} -eq 0 ]] || exit 2
