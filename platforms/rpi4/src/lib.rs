//! The `rpi4` target of compose: a bare-metal unikernel for the Raspberry Pi 4 (BCM2711,
//! Cortex-A72), booted by the Pi's firmware from an SD card as `kernel8.img`, or by
//! `qemu-system-aarch64 -M raspi4b -kernel kernel8.img`.
//!
//! The generated glue (templates/rpi4/main.rs.j2) uses this crate as `platform`, as every
//! target's glue does (see docs/platform.md), and names its `main` with
//! [`entry!`]. This crate brings everything else: the entry point, the exception vectors,
//! the memory map and the devices.
//!
//! # Boot
//!
//! `_start` (see `start.rs`) runs at 0x80000 at EL2 (the firmware's armstub and QEMU both
//! enter there; the ELF under QEMU enters at EL3 and is dropped to EL2 first), parks cores
//! 1-3, drops to EL1, enables FP/SIMD before any Rust code, sets a 1 MiB stack above the
//! image and zeroes `.bss`. Then the Rust start:
//!
//! 1. turns on the MMU (identity map: RAM normal write-back cacheable, which atomics need
//!    on a real board; peripherals device memory) and the caches;
//! 2. asks the mailbox for the PL011's reference clock (48 MHz on a board, 3 MHz in QEMU)
//!    and starts the console at 115200 8N1 on GPIO 14/15 (ALT0);
//! 3. copies the command line (the device tree's `/chosen/bootargs`: `cmdline.txt` on the
//!    card, `-append` under QEMU; or an ATAG list's) and a host seed, if any (see
//!    [`Random`]), then gives the ARM memory the mailbox reports, above the stack, to the
//!    heap;
//! 4. sets up the GIC-400 and the generic timer (CNTFRQ read at run time: 54 MHz on a
//!    board, 62.5 MHz under QEMU), and runs the glue's `main`.
//!
//! # Running
//!
//! The executor idles in WFI: a sleep arms the EL1 physical timer (PPI 30 through the
//! GIC), so an idle unikernel does not spin. A CPU fault prints
//! `<program>: trap: <what> (ESR ...), pc ..., far ...` and ends with status 255; a panic
//! prints its message and ends with 255. [`exit`] prints `rpi4: exit status N` and ends:
//! under QEMU with `-semihosting` (as `compose run` starts it) QEMU exits with the status,
//! on a board the core stops.
//!
//! `--rpi4:debug` on the command line reports the board at start (mailbox: revision,
//! serial, MAC, clocks, memory; timer frequency; RNG200) and each sleep.
//!
//! # Devices
//!
//! The console (PL011), the monotonic clock (generic timer), randomness (RNG200, or a
//! host-seeded ChaCha20 where the board has none: QEMU) and audio on the headphone jack
//! ([`Audio`]: PWM1 through `bcm2711-audio`; QEMU has no PWM, so there it fails to open). The rest of the platform
//! contract exists so that the contract is complete, but every constructor fails: the
//! target's `implements` list keeps specs from asking for them (`compose check` refuses
//! network, block devices, secrets and the wall clock on rpi4: there is no GENET, SD card
//! or RTC driver yet).
#![no_std]
extern crate alloc;

pub mod cmdline;
pub mod property;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod devices;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod heap;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod hw;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod mmio;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod start;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use devices::*;

// The crate provides the whole platform contract (compose_devices::platform), and audio.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
compose_devices::platform_conformance!(Rpi4, audio);

/// The PL011's integer and fractional baud divisors for reference clock `hz`:
/// divisor = hz / (16 * baud), the fraction in 64ths, rounded.
pub fn uart_divisors(hz: u32, baud: u32) -> (u32, u32) {
    let sixty_fourths = (u64::from(hz) * 4 + u64::from(baud) / 2) / u64::from(baud);
    ((sixty_fourths >> 6) as u32, (sixty_fourths & 63) as u32)
}

/// Names the glue's `main` as the unikernel's entry: `platform::entry!(main);`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "Rust" fn __compose_rpi4_main() {
            $crate::set_program(match option_env!("CARGO_BIN_NAME") {
                Some(bin) => bin,
                None => env!("CARGO_PKG_NAME"),
            });
            let main: fn() = $main;
            main()
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn baud_divisors_follow_the_uart_clock() {
        // 48 MHz (a board): 26.042 -> 26 + 3/64; 3 MHz (QEMU): 1.628 -> 1 + 40/64.
        assert_eq!(super::uart_divisors(48_000_000, 115_200), (26, 3));
        assert_eq!(super::uart_divisors(3_000_000, 115_200), (1, 40));
    }
}
