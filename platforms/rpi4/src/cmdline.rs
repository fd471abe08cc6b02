//! The boot command line: where it comes from and which of its words are the unikernel's.
//! Host-testable.
//!
//! On a board the firmware reads `cmdline.txt` from the SD card and puts it, after words
//! of its own for Linux (`coherent_pool=1M 8250.nr_uarts=1 ...`), in the device tree's
//! `/chosen/bootargs`, whose address it passes in x0. Under QEMU, `-append` does the
//! same with `-dtb`, and without one lands in an ATAG list (ATAG_CMDLINE) at 0x100. The
//! unikernel's boot arguments are the words that start with `--` (`--name=value`,
//! `--help`); the others are left to the firmware and Linux. `--rpi4:debug` asks the
//! runtime to report the board at start and each sleep.

/// `ATAG_CORE`, the first tag of an ATAG list.
pub const ATAG_CORE: u32 = 0x5441_0001;
/// `ATAG_CMDLINE`.
pub const ATAG_CMDLINE: u32 = 0x5441_0009;

/// The command line in an ATAG list given as words (size in words, tag, data...), if any.
pub fn atag_cmdline(words: &[u32]) -> Option<&[u8]> {
    if words.get(1) != Some(&ATAG_CORE) {
        return None;
    }
    let mut i = 0;
    while i + 1 < words.len() {
        let (size, tag) = (words[i] as usize, words[i + 1]);
        if size < 2 || i + size > words.len() {
            return None;
        }
        if tag == ATAG_CMDLINE {
            let data = &words[i + 2..i + size];
            // SAFETY: reinterpreting initialised u32s as bytes (alignment only goes down).
            let bytes =
                unsafe { core::slice::from_raw_parts(data.as_ptr().cast::<u8>(), data.len() * 4) };
            let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            return Some(&bytes[..len]);
        }
        i += size;
    }
    None
}

/// The runtime's own flag.
pub const DEBUG_FLAG: &str = "--rpi4:debug";

/// The unikernel's words of `cmdline` (those starting with `--`, without the runtime's
/// flags), and whether `--rpi4:debug` was among them.
pub fn unikernel_args(cmdline: &str) -> (impl Iterator<Item = &str> + Clone, bool) {
    let debug = cmdline.split_ascii_whitespace().any(|w| w == DEBUG_FLAG);
    let args = cmdline
        .split_ascii_whitespace()
        .filter(|w| w.starts_with("--") && !w.starts_with("--rpi4:"));
    (args, debug)
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn firmware_words_are_left_out() {
        let (args, debug) =
            unikernel_args("coherent_pool=1M 8250.nr_uarts=1  --name=Ada --rpi4:debug --times=2\n");
        assert_eq!(args.collect::<Vec<_>>(), ["--name=Ada", "--times=2"]);
        assert!(debug);
        let (args, debug) = unikernel_args("");
        assert_eq!(args.count(), 0);
        assert!(!debug);
    }

    #[test]
    fn the_command_line_is_found_in_an_atag_list() {
        let mut words = std::vec![5, ATAG_CORE, 0, 0, 0, 4, 0x5441_0002, 0x1000_0000, 0];
        let text = b"--name=Ada\0\0";
        words.push(2 + 3);
        words.push(ATAG_CMDLINE);
        for c in text.chunks(4) {
            words.push(u32::from_ne_bytes(c.try_into().unwrap()));
        }
        words.extend([0, 0]);
        assert_eq!(atag_cmdline(&words), Some(&b"--name=Ada"[..]));
        assert_eq!(atag_cmdline(&words[..9]), None, "no ATAG_CMDLINE");
        assert_eq!(atag_cmdline(&[0xd00d_feed, 0]), None, "not an ATAG list");
        assert_eq!(atag_cmdline(&[5, ATAG_CORE, 0]), None, "truncated");
    }
}
