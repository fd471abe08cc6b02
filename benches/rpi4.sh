#!/usr/bin/env bash
# rpi4 under QEMU raspi4b: time from starting QEMU to the unikernel's first UART line
# (median of N boots), against a baseline measured in the same run: a 40-byte kernel that
# writes one line to the PL011 and exits through semihosting, i.e. QEMU's own start-up.
# The ratio is what the runtime (MMU, mailbox, console, GIC and timer set-up) and the
# application add before the first line. Also the kernel8.img sizes of hello (and of the
# jukebox, if it builds for rpi4).
#
#   benches/rpi4.sh [N]        (default: 21 boots of each)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${BENCH_DIR:-/tmp/compose-bench-rpi4}
n=${1:-21}
mkdir -p "$work"
cargo build -q --release -p compose --manifest-path "$root/Cargo.toml"
compose="$root/target/release/compose"
export COMPOSE_TARGET_DIR="$work/target" COMPOSE_STORE="$work/store"

entry=$("$compose" build "$root/specs/hello.kdl" --target rpi4 --no-out-link 2>/dev/null)
hello="$entry/kernel8.img"
jukebox=
if [ -f "$root/specs/jukebox.kdl" ]; then
    if j=$("$compose" build "$root/specs/jukebox.kdl" --target rpi4 --no-out-link 2>/dev/null); then
        jukebox="$j/kernel8.img"
    fi
fi

# The baseline kernel: x2 = PL011 data register; write "b\n"; SYS_EXIT(0) by semihosting.
python3 - "$work/baseline.img" <<'PY'
import struct, sys
def movz(rd, imm, hw=0): return 0xd2800000 | (hw << 21) | (imm << 5) | rd
def movk(rd, imm, hw): return 0xf2800000 | (hw << 21) | (imm << 5) | rd
def strw(rt, rn): return 0xb9000000 | (rn << 5) | rt
words = [
    movz(2, 0x1000), movk(2, 0xfe20, 1),       # x2 = 0xfe201000
    movz(3, ord("b")), strw(3, 2),
    movz(3, ord("\n")), strw(3, 2),
    movz(0, 0x18),                              # SYS_EXIT
    0x10000000 | (2 << 5) | 1,                  # adr x1, block (+8 bytes)
    0xd45e0000,                                 # hlt #0xf000
    0x14000000,                                 # b .
]
block = struct.pack("<QQ", 0x20026, 0)
img = b"".join(struct.pack("<I", w) for w in words)
# adr x1 must point at the block, right after the words: fix the offset.
off = len(img) - 7 * 4
img = bytearray(img)
struct.pack_into("<I", img, 7 * 4, 0x10000000 | ((off & 3) << 29) | ((off >> 2) << 5) | 1)
open(sys.argv[1], "wb").write(bytes(img) + block)
PY

python3 - "$n" "$work/baseline.img" "$hello" <<'PY'
import statistics, subprocess, sys, time
n, baseline, hello = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def boot(image, append=None):
    cmd = ["qemu-system-aarch64", "-M", "raspi4b", "-display", "none", "-monitor", "none",
           "-serial", "stdio", "-semihosting", "-no-reboot", "-kernel", image]
    if append:
        cmd += ["-append", append]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        first = p.stdout.readline()
        t1 = time.monotonic()
        p.stdout.read()
        p.wait(timeout=60)
        t2 = time.monotonic()
    finally:
        if p.poll() is None:
            p.kill(); p.wait()
    if not first:
        sys.exit(f"{image}: no UART line")
    return (t1 - t0) * 1000, (t2 - t0) * 1000
def ready(image):
    # The runtime's own account (--rpi4:debug): counter at entry and when set up, in us.
    out = subprocess.run(["qemu-system-aarch64", "-M", "raspi4b", "-display", "none", "-monitor", "none",
                          "-serial", "stdio", "-semihosting", "-no-reboot", "-kernel", image,
                          "-append", "--rpi4:debug --times=1"],
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=60).stdout.decode()
    line = next(l for l in out.splitlines() if l.startswith("rpi4: entered at counter"))
    words = line.split()
    return int(words[4]), int(words[8])
base, hel, rdy = [], [], []
for _ in range(n):  # interleaved, so that load changes hit both alike
    base.append(boot(baseline))
    hel.append(boot(hello, "--times=1"))
    rdy.append(ready(hello))
bf = statistics.median(b[0] for b in base); hf = statistics.median(h[0] for h in hel)
bx = statistics.median(b[1] for b in base); hx = statistics.median(h[1] for h in hel)
print(f"boots: {n} of each, interleaved")
print(f"first UART line: baseline {bf:.1f} ms, hello {hf:.1f} ms (median), ratio {hf / bf:.2f}")
print(f"to QEMU exit:    baseline {bx:.1f} ms, hello {hx:.1f} ms (median), ratio {hx / bx:.2f}")
entered = statistics.median(r[0] for r in rdy) / 1000
setup = statistics.median(r[1] - r[0] for r in rdy) / 1000
print(f"guest clock:     kernel entered {entered:.1f} ms after reset, runtime set up in {setup:.1f} ms (median)")
PY
size() { stat -c %s "$1"; }
echo "kernel8.img: hello $(size "$hello") bytes"
if [ -n "$jukebox" ]; then
    echo "kernel8.img: jukebox $(size "$jukebox") bytes"
fi
