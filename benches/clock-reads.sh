#!/usr/bin/env bash
# Clock reads per timer wake-up on the Solo5 targets: `devices_guest` sleeps 200 times for
# 200 us under a 60 s timeout (as a connection's read waits under its idle timeout) and
# prints how often the target's monotonic clock was read (solo5-guest counts every
# `Bindings::monotonic_ns`). On hvt a read is an `rdtsc`, which this machine's software
# KVM emulates at 10-20 us; on spt it is a clock_gettime system call.
#
#   benches/clock-reads.sh
#
# Images are built (release, x86_64-unknown-none) in $CARGO_TARGET_DIR/clock-reads-TARGET.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
cd "$root"
cargo build -q --release -p compose-hvt -p compose-spt
disk=$(mktemp /tmp/clock-reads-XXXXXX.img)
trap 'rm -f "$disk"' EXIT
truncate -s 64K "$disk"
for t in hvt spt; do
    [[ $t == hvt && ! -w /dev/kvm ]] && { echo "hvt: no /dev/kvm, skipped"; continue; }
    CARGO_TARGET_DIR="$target/clock-reads-$t" \
    CARGO_ENCODED_RUSTFLAGS="$(printf -- "-Crelocation-model=static\x1f-Clink-arg=-Tcompose-$t.ld\x1f-Clink-arg=-zmax-page-size=0x1000\x1f-Clink-arg=-znorelro\x1f-Clink-arg=--no-pie")" \
        cargo build -q --release -p "compose-$t-guest" --features examples --example devices_guest \
        --target x86_64-unknown-none
    image="$target/clock-reads-$t/x86_64-unknown-none/release/examples/devices_guest"
    line=$("$target/release/compose-$t" --mem=32 "--block:storage=$disk" -- "$image" |
        grep 'clock reads per timer wake')
    echo "$t: $line"
done
