#!/usr/bin/env bash
# Rebuild times of a real site: the Rust standard library's HTML documentation (rust-docs,
# ~52,000 files, ~0.66 GB), built for unix with the block and the embedded backends.
#
#   benches/rebuild.sh [--backends block,embed] [--rounds N] [--work DIR] [--out FILE]
#                      [--keep] [--rev REV] [--compose BIN]
#
# The compose tree the builds use (COMPOSE_ROOT) is a snapshot of the commit REV (default
# HEAD: `git archive`), so that editing the tree while the bench runs changes nothing;
# BIN (default: this tree's `cargo build --release`) is the compose that runs. To compare
# with an older compose: build it, then `--compose OLD-BINARY --rev OLD-COMMIT`.
#
# For each backend, in this order, through the compose CLI:
#  * cold:     an empty store and build folder (the cargo build of the dependencies is
#              shared: a warm-up build of a one-page site in a separate store fills
#              cargo's target dir, so "cold" is compose's own work on the 660 MB tree:
#              packing, compressing, linking, storing);
#  * no-op:    the same build again, nothing changed (N rounds);
#  * one file: one HTML page of the tree rewritten with new content (N rounds, a new
#              content each round, so each is a real rebuild);
#  * bundle:   `compose bundle` of the last result (1 run; the block backend's build leaves
#              the bundle to it).
# Figures: wall time and peak RSS (GNU time: max over the process tree), medians over the
# rounds; the phase breakdown of the last round of each case (COMPOSE_TIMINGS=1, on
# stderr); disk use (du) of the store and of the build folder after the runs (du counts a
# file hard-linked between them once, in whichever it meets first: the store is measured
# first, then the build folder alone, then both together).
#
# The tree is hard-linked from the toolchain's copy (cp -al); the changed page is replaced
# by a new file (never written in place), so the toolchain's copy is never modified.
# Needs: python3, GNU time. Work dir (default target/rebuild-bench): ~3 GB for both
# backends. `--keep` keeps the store and build folder of the last case for inspection.
# Results: printed, and written as markdown to --out (default target/rebuild.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
backends=block,embed; rounds=3; work=""; out="$root/target/rebuild.md"; keep=0; rev=HEAD; compose="" 
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "rebuild: $*" >&2; exit 1; }
while [[ $# -gt 0 ]]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --keep) keep=1; shift; continue ;;
    esac
    [[ $# -ge 2 ]] || die "$1 wants a value (see --help)"
    case $1 in
        --backends) backends=$2 ;;
        --rounds) [[ $2 =~ ^[0-9]+$ && $2 -gt 0 ]] || die "--rounds wants a positive whole number"; rounds=$2 ;;
        --work) work=$2 ;;
        --rev) rev=$2 ;;
        --compose) compose=$(realpath "$2") ;;
        --out) out=$2 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift 2
done
IFS=, read -r -a backend_list <<<"$backends"
for b in "${backend_list[@]}"; do [[ $b == block || $b == embed ]] || die "--backends: block and/or embed, not '$b'"; done
[[ -x /usr/bin/time ]] || die "needs GNU time (/usr/bin/time; Debian: time)"
command -v python3 >/dev/null || die "needs python3"
work=${work:-$root/target/rebuild-bench}
mkdir -p "$work" "$(dirname "$out")"
work=$(cd "$work" && pwd)
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

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
log "linking $docs into $public"
rm -rf "$site"; mkdir -p "$site"
cp -al "$docs" "$public" 2>/dev/null || { rm -rf "$public"; cp -a "$docs" "$public"; }
read -r files bytes < <(find "$public" -type f -printf '%s\n' | awk '{ n++; s += $1 } END { print n, s }')
page=$public/std/vec/struct.Vec.html
[[ -f $page ]] || die "no $page in the tree"
src=$work/src
log "compose tree: $rev ($(git -C "$root" rev-parse --short "$rev")) in $src"
rm -rf "$src"; mkdir -p "$src"
git -C "$root" archive "$rev" | tar -x -C "$src"
export COMPOSE_ROOT=$src
# The warm-up's site: one page.
mkdir -p "$site/warm/public"
echo '<h1>warm-up</h1>' >"$site/warm/public/index.html"
cat >"$site/rebuild.kdl" <<'KDL'
// The Rust standard library's documentation (rust-docs), served by the built-in static site.
unikernel rebuild {
    target unix
}
param backend default="block" doc="embed or block"
bootarg port type=u16 default=8080 doc="TCP port to serve on"
netif service
ipv4 stack net=service address="127.0.0.1/8"
tcp
assets public dir="public" backend=(param)"backend"
application site builtin=static-site assets=public port=(bootarg)"port"
KDL
change_page() { # round: replace the page by a new file with new content
    local tmp=$page.new
    cp "$page" "$tmp"
    printf '\n<!-- rebuild bench: change %s %s -->\n' "$1" "$RANDOM$RANDOM" >>"$tmp"
    mv -f "$tmp" "$page"
}

sed 's/^assets public dir="public"/assets public dir="warm\/public"/' "$site/rebuild.kdl" >"$site/warm.kdl"
if [[ -z $compose ]]; then
    log "building compose (release)"
    cargo build -q --release -p compose --manifest-path "$root/Cargo.toml"
    compose=$root/target/release/compose
fi
[[ -x $compose ]] || die "no compose binary at $compose"
export COMPOSE_TIMINGS=1

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
run_build() { # backend store build label -> appends "secs kib" to $work/times-<label>
    local b=$1 st=$2 bd=$3 label=$4
    if ! COMPOSE_STORE=$st COMPOSE_TARGET_DIR=$bd /usr/bin/time -f "%e %M" -o "$work/time.one" \
        "$compose" build "$site/rebuild.kdl" --arg backend="$b" >"$work/log-$label" 2>&1; then
        tail -30 "$work/log-$label" >&2; die "compose build ($label) failed (log: $work/log-$label)"
    fi
    cat "$work/time.one" >>"$work/times-$label"
}
rows=()
phases=()
for b in "${backend_list[@]}"; do
    st=$work/store-$b bd=$work/build
    # Dependencies once, in a store of its own: "cold" below is compose's work, not the
    # cargo build of the network stack.
    log "$b: warm-up (cargo dependencies)"
    rm -rf "$st" "$work/warm-store" "$site/_build"
    COMPOSE_STORE=$work/warm-store COMPOSE_TARGET_DIR=$bd "$compose" build "$site/warm.kdl" \
        --arg backend="$b" >"$work/log-warm-$b" 2>&1 || { tail -30 "$work/log-warm-$b" >&2; die "warm-up build failed"; }
    rm -rf "$work/warm-store"
    rm -f "$work"/times-"$b"-*
    log "$b: cold"
    run_build "$b" "$st" "$bd" "$b-cold"
    cp "$work/log-$b-cold" "$work/phases-$b-cold"
    for r in $(seq "$rounds"); do
        log "$b: no-op $r/$rounds"
        run_build "$b" "$st" "$bd" "$b-noop"
    done
    cp "$work/log-$b-noop" "$work/phases-$b-noop"
    for r in $(seq "$rounds"); do
        change_page "$b-$r"
        log "$b: one file $r/$rounds"
        run_build "$b" "$st" "$bd" "$b-one"
    done
    cp "$work/log-$b-one" "$work/phases-$b-one"
    # `compose bundle` of the last result (a build of block images of 256 MiB or more leaves
    # the bundle to it: docs/spec.md, "Deferred bundles"), the frame cache warm. Skipped for
    # a compose without the command (--compose OLD-BINARY).
    cases="cold noop one"
    entry=$(grep -o "$st/[0-9a-f]*-rebuild-unix" "$work/log-$b-one" | tail -1 || true)
    if [[ -n $entry ]] && "$compose" bundle --help >/dev/null 2>&1; then
        log "$b: compose bundle of the last result"
        COMPOSE_STORE=$st /usr/bin/time -f "%e %M" -o "$work/time.one" "$compose" bundle "$entry" \
            -o "$work/bundle.tar.zst" >/dev/null 2>"$work/log-$b-bundle" \
            || { cat "$work/log-$b-bundle" >&2; die "compose bundle failed"; }
        cat "$work/time.one" >"$work/times-$b-bundle"
        rm -f "$work/bundle.tar.zst"
        cases="$cases bundle"
    fi
    du_store=$(du -sm "$st" | cut -f1)
    du_glue=$(du -sm "$site/_build" | cut -f1)
    du_build=$(du -sm "$bd" | cut -f1)
    du_both=$(du -smc "$st" "$site/_build" | tail -1 | cut -f1)
    for c in $cases; do
        f=$work/times-$b-$c
        secs=$(cut -d' ' -f1 "$f" | median)
        mib=$(($(cut -d' ' -f2 "$f" | median | cut -d. -f1) / 1024))
        n=$(wc -l <"$f")
        rows+=("| $b | $c | $secs | $mib | $n |")
    done
    rows+=("| $b | disk after the runs: store ${du_store} MiB ($(ls -d "$st"/*-rebuild-unix | wc -l) entries), glue folder ${du_glue} MiB, both ${du_both} MiB (hard-linked files once); cargo target dir ${du_build} MiB (shared by the backends) | | | |")
    for c in cold noop one; do
        phases+=("$b $c: $(grep -E '^timings:' "$work/phases-$b-$c" | tail -1 | sed 's/^timings: //')")
    done
    [[ $keep == 1 ]] || rm -rf "$st" "$site/_build"
done
[[ $keep == 1 ]] || rm -rf "$work/build"
{
    echo "# Rebuilds of rust-docs ($files files, $((bytes / 1048576)) MiB), unix target"
    echo
    echo "$(date -u +%FT%TZ), compose tree $rev, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); medians of $rounds rounds (cold: 1)"
    echo
    echo "| backend | case | wall s | peak RSS MiB | runs |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Phases (COMPOSE_TIMINGS=1, last run of each case):"
    echo
    printf '    %s\n' "${phases[@]}"
} | tee "$out"
