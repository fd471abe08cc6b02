#!/usr/bin/env bash
# Boot-to-exit time of the hello unikernel on the spt target: the wall time from starting
# `compose-spt` to its exit, for `hello_glue --times=1` (one greeting, no sleep), median of
# RUNS runs (default 50), with --mem=32 and with the default 512 MiB.
#
#   platforms/spt/benches/boot.sh [RUNS]
#
# It builds the tender (release) and the example (release, for x86_64-unknown-none) in
# $CARGO_TARGET_DIR (default /tmp/target-spt), then times each run from Python
# (subprocess, perf_counter), so a figure includes starting the process: it is what a
# caller waits for. The first run is a warm-up and is not counted.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
runs=${1:-50}
target=${CARGO_TARGET_DIR:-/tmp/target-spt}
cd "$root"
CARGO_TARGET_DIR="$target" cargo build -q --release -p compose-spt
CARGO_TARGET_DIR="$target/guest" \
CARGO_ENCODED_RUSTFLAGS="$(printf -- '-Crelocation-model=static\x1f-Clink-arg=-Tcompose-spt.ld\x1f-Clink-arg=-zmax-page-size=0x1000\x1f-Clink-arg=-znorelro\x1f-Clink-arg=--no-pie')" \
    cargo build -q --release -p compose-spt-guest --features examples --example hello_glue \
    --target x86_64-unknown-none
tender="$target/release/compose-spt"
image="$target/guest/x86_64-unknown-none/release/examples/hello_glue"
python3 - "$tender" "$image" "$runs" <<'PY'
import statistics, subprocess, sys, time
tender, image, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
for mem in ["--mem=32", "--mem=512"]:
    cmd = [tender, mem, image, "--times=1"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, stdout=subprocess.PIPE)
        times.append(time.perf_counter() - t0)
        assert out.returncode == 0 and out.stdout == b"Hello, world! (1/1)\n", out
    times.sort()
    ms = lambda t: f"{t * 1000:.2f} ms"
    print(f"spt boot-to-exit, hello {mem}: median {ms(statistics.median(times))}, "
          f"min {ms(times[0])}, max {ms(times[-1])} ({runs} runs)")
PY
