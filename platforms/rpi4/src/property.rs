//! The VideoCore mailbox's property interface, as data: a request of one tag and its
//! answer (the hardware exchange is in `hw::mailbox`). Host-testable.
//!
//! A buffer is 16-byte aligned: word 0 = total size in bytes, word 1 = 0 (request), then
//! the tag (id, value-buffer size in bytes, request code 0, values...), then the end tag
//! 0. The firmware overwrites word 1 with 0x80000000 on success and the tag's code word
//! with bit 31 set and the response length in bits 30:0. An unknown tag still gets a
//! successful buffer code (QEMU), but a response length of 0: both are checked.

/// Tags used by the runtime (Linux `raspberrypi-firmware.h`).
pub mod tag {
    /// Firmware revision.
    pub const FIRMWARE_REVISION: u32 = 0x0000_0001;
    /// Board revision (new-style code: memory, maker, SoC, type, revision).
    pub const BOARD_REVISION: u32 = 0x0001_0002;
    /// The MAC address (6 bytes).
    pub const MAC_ADDRESS: u32 = 0x0001_0003;
    /// The board serial (8 bytes).
    pub const BOARD_SERIAL: u32 = 0x0001_0004;
    /// ARM memory: base, size.
    pub const ARM_MEMORY: u32 = 0x0001_0005;
    /// VideoCore memory: base, size.
    pub const VC_MEMORY: u32 = 0x0001_0006;
    /// A clock's rate in Hz (request: the clock id).
    pub const CLOCK_RATE: u32 = 0x0003_0002;
}

/// Clock ids of [`tag::CLOCK_RATE`].
pub mod clock {
    /// EMMC.
    pub const EMMC: u32 = 1;
    /// The PL011's reference clock.
    pub const UART: u32 = 2;
    /// The ARM cores.
    pub const ARM: u32 = 3;
    /// The VideoCore core clock.
    pub const CORE: u32 = 4;
    /// The PWM clock.
    pub const PWM: u32 = 10;
}

/// Words in a property buffer: room for the longest tag the runtime sends.
pub const WORDS: usize = 16;
/// Value words of one tag, at most.
pub const MAX_VALUES: usize = WORDS - 6;

const REQUEST: u32 = 0;
const SUCCESS: u32 = 0x8000_0000;

/// Fills `buf` with a request of `tag`: `request` values, room for `response_words`.
/// Returns `None` if it does not fit.
pub fn encode(
    buf: &mut [u32; WORDS],
    tag: u32,
    request: &[u32],
    response_words: usize,
) -> Option<()> {
    let values = request.len().max(response_words);
    if values > MAX_VALUES {
        return None;
    }
    buf.fill(0);
    let total = 5 + values + 1;
    buf[0] = (total * 4) as u32;
    buf[1] = REQUEST;
    buf[2] = tag;
    buf[3] = (values * 4) as u32;
    buf[4] = 0;
    buf[5..5 + request.len()].copy_from_slice(request);
    buf[5 + values] = 0;
    Some(())
}

/// The values of the answer in `buf` to a request of `tag`, or `None` if the firmware did
/// not answer it (buffer code, tag id, response bit or length).
pub fn decode(buf: &[u32; WORDS], tag: u32) -> Option<&[u32]> {
    if buf[1] != SUCCESS || buf[2] != tag || buf[4] & SUCCESS == 0 {
        return None;
    }
    let bytes = (buf[4] & !SUCCESS) as usize;
    if bytes == 0 || bytes > (buf[3] as usize) {
        return None;
    }
    Some(&buf[5..5 + bytes.div_ceil(4)])
}

/// What a new-style board revision code says (bit 23 set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revision {
    /// The board type (0x11 = Pi 4 Model B).
    pub board: u32,
    /// The board's revision (minor).
    pub revision: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
}

impl Revision {
    /// Decodes a new-style code; `None` for an old-style one.
    pub fn decode(code: u32) -> Option<Revision> {
        if code & (1 << 23) == 0 {
            return None;
        }
        Some(Revision {
            board: (code >> 4) & 0xff,
            revision: code & 0xf,
            memory_mib: 256 << ((code >> 20) & 0x7),
        })
    }

    /// The board's name, for messages.
    pub fn name(&self) -> &'static str {
        match self.board {
            0x11 => "Raspberry Pi 4 Model B",
            0x13 => "Raspberry Pi 400",
            0x14 => "Raspberry Pi Compute Module 4",
            _ => "a Raspberry Pi",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_laid_out_as_the_firmware_reads_it() {
        let mut buf = [0xffff_ffffu32; WORDS];
        encode(&mut buf, tag::CLOCK_RATE, &[clock::UART], 2).unwrap();
        assert_eq!(&buf[..9], &[32, 0, 0x30002, 8, 0, 2, 0, 0, 0]);
        assert!(encode(&mut buf, 1, &[0; 11], 0).is_none());
    }

    #[test]
    fn answers_are_checked_before_they_are_believed() {
        let mut buf = [0u32; WORDS];
        encode(&mut buf, tag::BOARD_REVISION, &[], 1).unwrap();
        assert_eq!(decode(&buf, tag::BOARD_REVISION), None, "not answered yet");
        buf[1] = SUCCESS;
        buf[4] = SUCCESS | 4;
        buf[5] = 0xb03115;
        assert_eq!(decode(&buf, tag::BOARD_REVISION), Some(&[0xb03115][..]));
        assert_eq!(decode(&buf, tag::MAC_ADDRESS), None, "another tag");
        // QEMU's answer to a tag it does not know: success, but no data.
        buf[4] = SUCCESS;
        assert_eq!(decode(&buf, tag::BOARD_REVISION), None);
    }

    #[test]
    fn qemus_board_is_a_2_gib_pi_4_b() {
        let r = Revision::decode(0xb03115).unwrap();
        assert_eq!((r.board, r.revision, r.memory_mib), (0x11, 5, 2048));
        assert_eq!(r.name(), "Raspberry Pi 4 Model B");
        assert_eq!(Revision::decode(0x000e), None);
    }
}
