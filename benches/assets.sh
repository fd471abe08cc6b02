#!/usr/bin/env bash
# Build time and peak compiler memory of an embedded site, by size, against the same site
# packed as per-file `include_bytes!` literals (what a crunch-style tool generates), and
# packing time of 1 GiB for the block backend.
#
#   benches/assets.sh [SIZES_MB...]        (default: 0 10 100 500)
#
# Each site has many small HTML files (20% of the bytes, 8 KiB each: compressible) and four
# large binary files (80%: media, stored as they are). Figures: wall time of the build (the glue crate only: dependencies are built
# once beforehand) and the peak RSS of the build's processes (GNU time, max over children).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${BENCH_DIR:-/tmp/compose-bench-assets}
sizes=("${@:-0 10 100 500}")
read -r -a sizes <<<"${sizes[*]}"
mkdir -p "$work"
cargo build -q --release -p compose --manifest-path "$root/Cargo.toml"
compose="$root/target/release/compose"
export COMPOSE_TARGET_DIR="$work/target"

make_site() { # dir megabytes
    python3 - "$1" "$2" <<'PY'
import os, sys, random
d, mb = sys.argv[1], int(sys.argv[2])
if os.path.exists(os.path.join(d, ".done")): sys.exit(0)
os.makedirs(d, exist_ok=True)
rnd = random.Random(42)
total = mb << 20
small = int(total * 0.2)
words = [bytes(w, "ascii") for w in "compose unikernel site static asset kdl spec graph glue image device".split()]
i = 0
while small > 0:
    n = min(8192, small)
    body = b"<p>" + b" ".join(rnd.choice(words) for _ in range(n // 8)) + b"</p>\n"
    sub = os.path.join(d, f"d{i // 500}")
    os.makedirs(sub, exist_ok=True)
    open(os.path.join(sub, f"page{i}.html"), "wb").write(body[:n])
    small -= n; i += 1
big = total - int(total * 0.2)
for j in range(4):
    n = big // 4
    if n: open(os.path.join(d, f"blob{j}.bin"), "wb").write(rnd.randbytes(n))
open(os.path.join(d, "index.html"), "w").write("<h1>bench</h1>")
open(os.path.join(d, ".done"), "w").write("")
PY
}

include_bytes_crate() { # site dir, crate dir
    python3 - "$1" "$2" <<'PY'
import os, sys
site, crate = sys.argv[1], sys.argv[2]
os.makedirs(os.path.join(crate, "src"), exist_ok=True)
open(os.path.join(crate, "Cargo.toml"), "w").write('[package]\nname = "crunched"\nversion = "0.0.0"\nedition = "2021"\n[workspace]\n[profile.release]\ncodegen-units = 16\n')
files = []
for dp, dn, fn in os.walk(site):
    dn.sort()
    for f in sorted(fn):
        if f == ".done": continue
        p = os.path.join(dp, f); files.append((os.path.relpath(p, site), os.path.abspath(p)))
with open(os.path.join(crate, "src", "main.rs"), "w") as out:
    out.write("static FILES: &[(&str, &[u8])] = &[\n")
    for rel, p in files: out.write(f'    ({rel!r}, include_bytes!({p!r})),\n'.replace("'", '"'))
    out.write("];\nfn main() { let n: usize = FILES.iter().map(|f| f.1.len()).sum(); println!(\"{} files, {} bytes\", FILES.len(), n); }\n")
PY
}

fresh() { # a new, empty store for each measured build, so it builds instead of finding the result
    echo "$work/stores/$(date +%s%N)"
}

measure() { # label command...
    local log; log=$(mktemp)
    /usr/bin/time -f "%e %M" -o "$log" "$@" >/dev/null 2>&1
    read -r secs kib <"$log"; rm -f "$log"
    printf '%-44s %8.2f s %8d MiB peak\n' "$label" "$secs" "$((kib / 1024))"
}

for mb in "${sizes[@]}"; do
    site="$work/site-$mb/public"
    make_site "$site" "$mb"
    cat >"$work/site-$mb/site.kdl" <<KDL
unikernel bench
console
tcp
assets public dir="public"
application site builtin=static-site assets=public
KDL
    # Warm: build once so only the glue crate and the packing are measured below.
    "$compose" build "$work/site-$mb/site.kdl" --store "$(fresh)" --no-out-link >/dev/null 2>&1
    label="compose embed ${mb} MB (pack + compile + store)" measure "$compose" build "$work/site-$mb/site.kdl" --store "$(fresh)" --no-out-link
    sed -i 's/dir="public"$/dir="public" compress=#false/' "$work/site-$mb/site.kdl"
    "$compose" build "$work/site-$mb/site.kdl" --store "$(fresh)" --no-out-link >/dev/null 2>&1
    label="compose embed ${mb} MB, compress=#false" measure "$compose" build "$work/site-$mb/site.kdl" --store "$(fresh)" --no-out-link
    "$compose" build "$work/site-$mb/site.kdl" --store "$work/stores/warm" --no-out-link >/dev/null 2>&1
    label="compose no-op rebuild ${mb} MB (unchanged)" measure "$compose" build "$work/site-$mb/site.kdl" --store "$work/stores/warm" --no-out-link
    crate="$work/crunched-$mb"
    include_bytes_crate "$site" "$crate"
    cargo build -q --release --manifest-path "$crate/Cargo.toml" --target-dir "$work/target-crunch" >/dev/null 2>&1 || true
    touch "$crate/src/main.rs"
    label="per-file include_bytes! ${mb} MB" measure cargo build -q --release --manifest-path "$crate/Cargo.toml" --target-dir "$work/target-crunch"
done

# Packing 1 GiB for the block backend: the build with backend=block (glue compile is warm,
# so this is the packing), time and peak memory of compose and its children.
site="$work/site-1024/public"
make_site "$site" 1024
cat >"$work/site-1024/site.kdl" <<KDL
unikernel bench
console
tcp
assets public dir="public" backend=block
application site builtin=static-site assets=public
KDL
"$compose" build "$work/site-1024/site.kdl" --store "$(fresh)" --no-out-link >/dev/null 2>&1
label="compose block 1024 MB (pack + store, glue warm)" measure "$compose" build "$work/site-1024/site.kdl" --store "$(fresh)" --no-out-link
ls -l "$(ls -d "$work"/stores/*/*-bench-unix | tail -1)/public.img" | awk '{printf "block image: %d MiB\n", $5 / 1048576}'
rm -rf "$work/stores"
