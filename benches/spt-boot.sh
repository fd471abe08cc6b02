#!/usr/bin/env bash
# CPU per boot of the spt target: user + system time of one boot-to-exit of a hello
# unikernel, as the kernel accounts it to the waiting parent (wait4's rusage, which
# includes any process the tender forks), summed over BOOTS boots (default 100) and divided;
# the median of RUNS such runs (default 7), with wall time per boot alongside.
#
#   benches/spt-boot.sh [RUNS] [BOOTS]
#
# Tenders and images, each row run in turn within every run so that a busy machine hurts
# all rows alike:
#  * compose-spt (release, built here) with compose's hello (`hello_glue --times=1`);
#  * SOLO5_SPT=/path/to/solo5-spt and SOLO5_HELLO=/path/to/test_hello.spt, if given:
#    Solo5's own tender with its test_hello, compose-spt with the same test_hello (the
#    same guest under both tenders is the fair comparison), and solo5-spt with compose's
#    hello (compose-spt is a drop-in replacement: the images run on either);
#  * BEFORE_SPT=/path/to/an/older/compose-spt, if given, with both images.
# Ratios are to the first row (solo5-spt with test_hello when given, else compose-spt).
#
# Building Solo5 for the comparison (never committed; needs gcc, make, libseccomp-dev):
#   git clone https://github.com/Solo5/solo5 /tmp/solo5 && cd /tmp/solo5
#   ./configure.sh && make    # a copy without .git needs include/version.h.distrib
#   SOLO5_SPT=/tmp/solo5/tenders/spt/solo5-spt \
#   SOLO5_HELLO=/tmp/solo5/tests/test_hello/test_hello.spt benches/spt-boot.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-7}; boots=${2:-100}
target=${CARGO_TARGET_DIR:-$root/target}
cd "$root"
CARGO_TARGET_DIR="$target" cargo build -q --release -p compose-spt
CARGO_TARGET_DIR="$target/spt-boot-guest" \
CARGO_ENCODED_RUSTFLAGS="$(printf -- '-Crelocation-model=static\x1f-Clink-arg=-Tcompose-spt.ld\x1f-Clink-arg=-zmax-page-size=0x1000\x1f-Clink-arg=-znorelro\x1f-Clink-arg=--no-pie')" \
    cargo build -q --release -p compose-spt-guest --features examples --example hello_glue \
    --target x86_64-unknown-none
tender="$target/release/compose-spt"
hello="$target/spt-boot-guest/x86_64-unknown-none/release/examples/hello_glue"
rows=()
if [[ -n "${SOLO5_SPT:-}" && -n "${SOLO5_HELLO:-}" ]]; then
    rows+=("solo5-spt, test_hello|$SOLO5_SPT|$SOLO5_HELLO|")
    rows+=("compose-spt, test_hello|$tender|$SOLO5_HELLO|")
fi
rows+=("compose-spt, hello|$tender|$hello|--times=1")
if [[ -n "${SOLO5_SPT:-}" ]]; then
    rows+=("solo5-spt, hello|$SOLO5_SPT|$hello|--times=1")
fi
if [[ -n "${BEFORE_SPT:-}" ]]; then
    [[ -n "${SOLO5_HELLO:-}" ]] && rows+=("before, test_hello|$BEFORE_SPT|$SOLO5_HELLO|")
    rows+=("before, hello|$BEFORE_SPT|$hello|--times=1")
fi
python3 - "$runs" "$boots" "${rows[@]}" <<'PY'
import os, statistics, sys, time
runs, boots = int(sys.argv[1]), int(sys.argv[2])
rows = [r.split("|") for r in sys.argv[3:]]
null = os.open(os.devnull, os.O_WRONLY)

def boot(tender, image, arg):
    argv = [tender, "--mem=32", image] + ([arg] if arg else [])
    pid = os.posix_spawn(tender, argv, os.environ, file_actions=[
        (os.POSIX_SPAWN_DUP2, null, 1)])
    _, status, ru = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv} ended with wait status {status:#x}")
    return ru.ru_utime + ru.ru_stime

cpu = {r[0]: [] for r in rows}
wall = {r[0]: [] for r in rows}
for label, tender, image, arg in rows:  # warm-up: page cache, first-run costs
    boot(tender, image, arg)
for _ in range(runs):
    for label, tender, image, arg in rows:
        t0 = time.perf_counter()
        total = sum(boot(tender, image, arg) for _ in range(boots))
        wall[label].append((time.perf_counter() - t0) / boots)
        cpu[label].append(total / boots)
base = statistics.median(cpu[rows[0][0]])
print(f"spt boot-to-exit, --mem=32: CPU (user+sys) per boot, median of {runs} runs of {boots} boots")
for label, *_ in rows:
    c, w = statistics.median(cpu[label]), statistics.median(wall[label])
    print(f"  {label:24s} {c * 1e6:8.0f} us CPU  ({w * 1e6:6.0f} us wall)  "
          f"ratio {c / base:.2f}")
PY
