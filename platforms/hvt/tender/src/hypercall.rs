//! Hypercall decoding: a PIO exit becomes a [`Hypercall`] that borrows guest
//! memory, and a [`Reply`] is written back afterwards.
//!
//! The argument struct and every buffer it points at are bounds-checked here,
//! once, before anything is done; the executor never sees a raw guest address
//! except the block offset, which [`solo5_tender::devices::BlockDevice`]
//! checks against the device. Buffers the tender fills must also be writable
//! on the host (not in a read-only segment).

use solo5_abi::hvt::{self, HALT_COOKIE_MAX, Hypercall as Nr, offsets::*};

use crate::memory::{GuestAccessError, GuestMemory};

/// A decoded hypercall; buffers borrow guest memory.
#[derive(Debug)]
pub enum Hypercall<'g> {
    /// Return host wall-clock time.
    Walltime,
    /// Write bytes to the console.
    Puts(&'g [u8]),
    /// Wait up to `timeout_ns` for a NET device to become readable.
    Poll {
        /// Relative timeout in ns.
        timeout_ns: u64,
    },
    /// Write `data` to block device `handle` at `offset`.
    BlockWrite {
        /// Manifest index.
        handle: u64,
        /// Byte offset.
        offset: u64,
        /// The bytes to write.
        data: &'g [u8],
    },
    /// Fill `buf` from block device `handle` at `offset`.
    BlockRead {
        /// Manifest index.
        handle: u64,
        /// Byte offset.
        offset: u64,
        /// Where the bytes go.
        buf: &'g mut [u8],
    },
    /// Send one frame on NET device `handle`.
    NetWrite {
        /// Manifest index.
        handle: u64,
        /// The frame.
        data: &'g [u8],
    },
    /// Receive one frame from NET device `handle` into `buf`.
    NetRead {
        /// Manifest index.
        handle: u64,
        /// Frame buffer.
        buf: &'g mut [u8],
    },
    /// Stop the guest.
    Halt {
        /// Exit status (the tender exits with `status & 0xff`).
        status: i32,
    },
}

/// What a hypercall returns to the guest, written into its argument struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Nothing (PUTS).
    None,
    /// WALLTIME `nsecs`.
    Walltime(u64),
    /// POLL `ready_set` and `ret`.
    Poll {
        /// Readable NET handles.
        ready_set: u64,
        /// Number of bits in `ready_set`.
        ret: i32,
    },
    /// BLOCK_* or NET_WRITE `ret`.
    Ret(i32),
    /// NET_READ `ret` and, on success, `len`.
    NetRead {
        /// `SOLO5_R_*`.
        ret: i32,
        /// Frame length, written only when `ret` is OK.
        len: Option<u64>,
    },
}

/// Whether hypercall `nr` writes into its argument struct.
fn has_outputs(nr: Nr) -> bool {
    !matches!(nr, Nr::Puts | Nr::Halt)
}

/// Decodes hypercall `nr` whose argument struct is at `arg`.
pub fn decode(nr: Nr, arg: u64, mem: &mut GuestMemory) -> Result<Hypercall<'_>, GuestAccessError> {
    let size = nr.arg_size() as u64;
    mem.slice(arg, size)?;
    if has_outputs(nr) {
        mem.check_writable(arg, size)?;
    }
    let field = |mem: &GuestMemory, off: usize| mem.read_u64(arg + off as u64);
    Ok(match nr {
        Nr::Walltime => Hypercall::Walltime,
        Nr::Puts => {
            let (data, len) = (field(mem, PUTS_DATA)?, field(mem, PUTS_LEN)?);
            Hypercall::Puts(mem.slice(data, len)?)
        }
        Nr::Poll => Hypercall::Poll {
            timeout_ns: field(mem, POLL_TIMEOUT)?,
        },
        Nr::BlockWrite | Nr::BlockRead => {
            let handle = field(mem, BLOCK_HANDLE)?;
            let offset = field(mem, BLOCK_OFFSET)?;
            let (data, len) = (field(mem, BLOCK_DATA)?, field(mem, BLOCK_LEN)?);
            if nr == Nr::BlockWrite {
                Hypercall::BlockWrite {
                    handle,
                    offset,
                    data: mem.slice(data, len)?,
                }
            } else {
                Hypercall::BlockRead {
                    handle,
                    offset,
                    buf: mem.slice_mut(data, len)?,
                }
            }
        }
        Nr::NetWrite | Nr::NetRead => {
            let handle = field(mem, NET_HANDLE)?;
            let (data, len) = (field(mem, NET_DATA)?, field(mem, NET_LEN)?);
            if nr == Nr::NetWrite {
                Hypercall::NetWrite {
                    handle,
                    data: mem.slice(data, len)?,
                }
            } else {
                Hypercall::NetRead {
                    handle,
                    buf: mem.slice_mut(data, len)?,
                }
            }
        }
        Nr::Halt => {
            let cookie = field(mem, HALT_COOKIE)?;
            if cookie != 0 {
                mem.slice(cookie, HALT_COOKIE_MAX)?;
            }
            Hypercall::Halt {
                status: mem.read_i32(arg + HALT_STATUS as u64)?,
            }
        }
    })
}

/// Writes `reply` into the argument struct of hypercall `nr` at `arg`.
pub fn write_reply(
    nr: Nr,
    arg: u64,
    reply: Reply,
    mem: &mut GuestMemory,
) -> Result<(), GuestAccessError> {
    let at = |off: usize| arg + off as u64;
    match (nr, reply) {
        (_, Reply::None) => Ok(()),
        (Nr::Walltime, Reply::Walltime(ns)) => mem.write(at(WALLTIME_NSECS), &ns.to_le_bytes()),
        (Nr::Poll, Reply::Poll { ready_set, ret }) => {
            mem.write(at(POLL_READY_SET), &ready_set.to_le_bytes())?;
            mem.write(at(POLL_RET), &ret.to_le_bytes())
        }
        (Nr::BlockWrite | Nr::BlockRead, Reply::Ret(ret)) => {
            mem.write(at(BLOCK_RET), &ret.to_le_bytes())
        }
        (Nr::NetWrite, Reply::Ret(ret)) => mem.write(at(NET_RET), &ret.to_le_bytes()),
        (Nr::NetRead, Reply::NetRead { ret, len }) => {
            if let Some(len) = len {
                mem.write(at(NET_LEN), &len.to_le_bytes())?;
            }
            mem.write(at(NET_RET), &ret.to_le_bytes())
        }
        (nr, reply) => unreachable!("reply {reply:?} does not belong to {nr:?}"),
    }
}

/// The hypercall a 32-bit OUT to `port` makes, with its argument GPA.
pub fn from_pio(port: u16, data: &[u8]) -> Option<(Nr, u64)> {
    let nr = hvt::Hypercall::from_port(port)?;
    let gpa: [u8; 4] = data.try_into().ok()?;
    Some((nr, u64::from(u32::from_le_bytes(gpa))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemory {
        GuestMemory::new(0x10_0000).unwrap()
    }

    fn put(m: &mut GuestMemory, gpa: u64, words: &[u64]) {
        for (i, w) in words.iter().enumerate() {
            m.write(gpa + 8 * i as u64, &w.to_le_bytes()).unwrap();
        }
    }

    #[test]
    fn pio_decoding() {
        assert_eq!(
            from_pio(0x502, &[0x00, 0x10, 0, 0]),
            Some((Nr::Puts, 0x1000))
        );
        assert_eq!(from_pio(0x502, &[0, 0]), None);
        assert_eq!(from_pio(0x502, &[0; 8]), None);
        assert_eq!(from_pio(0x500, &[0; 4]), None);
        assert_eq!(from_pio(0x509, &[0; 4]), None);
        assert_eq!(from_pio(0x3f8, &[0; 4]), None);
    }

    #[test]
    fn puts_borrows_checked_memory() {
        let mut m = mem();
        m.write(0x2000, b"hello").unwrap();
        put(&mut m, 0x1000, &[0x2000, 5]);
        match decode(Nr::Puts, 0x1000, &mut m).unwrap() {
            Hypercall::Puts(b) => assert_eq!(b, b"hello"),
            other => panic!("{other:?}"),
        }
        // Out-of-range data pointer, length overflow, struct at the very end.
        put(&mut m, 0x1000, &[0xF_FFFF, 1]);
        assert!(decode(Nr::Puts, 0x1000, &mut m).is_err());
        put(&mut m, 0x1000, &[0x2000, u64::MAX]);
        assert!(decode(Nr::Puts, 0x1000, &mut m).is_err());
        assert!(decode(Nr::Puts, 0xF_FFF8, &mut m).is_err());
        assert!(decode(Nr::Halt, 0xFFFF_FFFF, &mut m).is_err());
    }

    #[test]
    fn block_read_needs_writable_buffer() {
        let mut m = mem();
        put(&mut m, 0x1000, &[1, 512, 0x4000, 512]);
        assert!(matches!(
            decode(Nr::BlockRead, 0x1000, &mut m).unwrap(),
            Hypercall::BlockRead { handle: 1, offset: 512, buf } if buf.len() == 512
        ));
        m.protect(0x4000, 0x5000, libc::PROT_READ).unwrap();
        assert!(matches!(
            decode(Nr::BlockRead, 0x1000, &mut m),
            Err(GuestAccessError::ReadOnly { .. })
        ));
        // Writing from a read-only buffer is fine.
        assert!(decode(Nr::BlockWrite, 0x1000, &mut m).is_ok());
        // An argument struct in read-only memory cannot take a reply.
        assert!(decode(Nr::Walltime, 0x4000, &mut m).is_err());
        assert!(decode(Nr::Puts, 0x4000, &mut m).is_ok());
    }

    #[test]
    fn halt_cookie_is_checked() {
        let mut m = mem();
        put(&mut m, 0x1000, &[0, 7]);
        assert!(matches!(
            decode(Nr::Halt, 0x1000, &mut m).unwrap(),
            Hypercall::Halt { status: 7 }
        ));
        put(&mut m, 0x1000, &[0xF_FF00, 7]);
        assert!(decode(Nr::Halt, 0x1000, &mut m).is_err());
        put(&mut m, 0x1000, &[0x8000, 255]);
        assert!(matches!(
            decode(Nr::Halt, 0x1000, &mut m).unwrap(),
            Hypercall::Halt { status: 255 }
        ));
    }

    #[test]
    fn replies_land_at_the_abi_offsets() {
        let mut m = mem();
        write_reply(
            Nr::Poll,
            0x1000,
            Reply::Poll {
                ready_set: 0b110,
                ret: 2,
            },
            &mut m,
        )
        .unwrap();
        assert_eq!(m.read_u64(0x1008).unwrap(), 0b110);
        assert_eq!(m.read_i32(0x1010).unwrap(), 2);
        write_reply(Nr::BlockRead, 0x2000, Reply::Ret(2), &mut m).unwrap();
        assert_eq!(m.read_i32(0x2020).unwrap(), 2);
        write_reply(
            Nr::NetRead,
            0x3000,
            Reply::NetRead {
                ret: 0,
                len: Some(60),
            },
            &mut m,
        )
        .unwrap();
        assert_eq!(m.read_u64(0x3010).unwrap(), 60);
        assert_eq!(m.read_i32(0x3018).unwrap(), 0);
        write_reply(Nr::Walltime, 0x4000, Reply::Walltime(42), &mut m).unwrap();
        assert_eq!(m.read_u64(0x4000).unwrap(), 42);
    }
}
