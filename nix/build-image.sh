# shellcheck shell=bash
# The builder of `lib.buildImage`: builds one unikernel image the way a Nix sandbox does,
# offline, from read-only sources, and copies compose's store entry to $out unchanged.
#
# It needs bash and coreutils, and reads its inputs from the environment (the attributes of
# the derivation):
#   src              the source tree (read-only; it is copied to a writable directory)
#   specFile         the spec, relative to src
#   composeTarget    unix | hvt | spt | ...
#   composeArgs      build parameters, one NAME=VALUE a line (may be empty)
#   cargoVendorDir   crates in cargo's directory-source layout (`cargo vendor
#                    --versioned-dirs`, or nixpkgs' importCargoLock): NAME-VERSION/ each
#   cargoIndexDir    the registry directory name cargo uses for crates.io
#                    (default index.crates.io-1949cf8c6b5b557f, cargo >= 1.85)
#   composeBin       the compose program (default: `compose` from PATH)
#   composeRootFromSrc  1: src is compose's own tree (its specs/ examples), so that copy is
#                    also COMPOSE_ROOT; otherwise COMPOSE_ROOT is left as the caller set it
#                    (the compose package's wrapper points it at share/compose)
#   out              where the store entry goes
#   TMPDIR / NIX_BUILD_TOP  scratch space
#
# Why the registry layout: cargo reads vendored crates from wherever the source
# replacement points, and rustc records those paths in the image (panic locations). The
# checkout build reads them from $CARGO_HOME/registry/src/<index>/NAME-VERSION, which compose
# remaps to /cargo/registry/src/...; placing the vendored crates at that very path under a
# fresh CARGO_HOME gives the same bytes, while a vendor directory anywhere else would leak
# its path into the image.
set -euo pipefail

: "${src:?src is not set}" "${specFile:?specFile is not set}" "${out:?out is not set}"
: "${composeTarget:?composeTarget is not set}" "${cargoVendorDir:?cargoVendorDir is not set}"
index_dir=${cargoIndexDir:-index.crates.io-1949cf8c6b5b557f}
compose=${composeBin:-compose}
top=${NIX_BUILD_TOP:-${TMPDIR:-/tmp}}
# A fixed path (in Nix's sandbox /build/compose-build): compose records the spec's path in
# buildinfo.json when the spec lies outside its tree, so `nix build --rebuild` needs it stable.
work="$top/compose-build"
if [ -e "$work" ]; then
    echo "build-image: $work exists already" >&2
    exit 1
fi
mkdir "$work"

# A writable copy of the sources: compose writes its glue next to the spec.
# Times kept: without SOURCE_DATE_EPOCH each asset file's mtime is its time in the archive
# (and so part of the image), and the sources' times (1 in the Nix store) are fixed.
cp -R --preserve=timestamps "$src" "$work/source"
chmod -R u+w "$work/source"

# The vendored crates, where cargo's registry would have put them.
export CARGO_HOME="$work/cargo-home"
registry="$CARGO_HOME/registry/src/$index_dir"
mkdir -p "$CARGO_HOME/registry/src"
cp -RL "$cargoVendorDir" "$registry"
chmod -R u+w "$registry"
cat > "$CARGO_HOME/config.toml" <<TOML
[source.crates-io]
replace-with = "compose-vendored"

[source.compose-vendored]
directory = "$registry"

[net]
offline = true
TOML

# Nothing of the builder's own environment reaches the build.
export HOME=/homeless-shelter
export CARGO_NET_OFFLINE=true
export COMPOSE_STORE="$work/store"
export COMPOSE_TARGET_DIR="$work/target"
unset CARGO_TARGET_DIR RUSTFLAGS CARGO_ENCODED_RUSTFLAGS RUSTC_WRAPPER SOURCE_DATE_EPOCH
if [ "${composeRootFromSrc:-}" = 1 ]; then
    export COMPOSE_ROOT="$work/source"
fi

build=(build "$specFile" --target "$composeTarget" --store "$COMPOSE_STORE" --no-out-link)
while IFS= read -r kv; do
    if [ -n "$kv" ]; then build+=(--arg "$kv"); fi
done <<< "${composeArgs:-}"

cd "$work/source"
entry=$("$compose" "${build[@]}")
if [ ! -d "$entry" ]; then
    echo "build-image: compose printed no store entry (got: $entry)" >&2
    exit 1
fi
# The entry as it is: its manifest records the hashes of its files.
cp -R "$entry" "$out"
echo "build-image: $specFile ($composeTarget) -> $out" >&2
