//! blkfront: a virtual block device of the domain (a vbd), for solo5-guest's `Block`.
//!
//! At boot, [`attach`] connects `device/vbd/ID` (xen/include/public/io/blkif.h; `ID` is
//! `202 << 8 | 16 * n` for `xvd` + letter `n`): it shares one ring page and one data
//! page with the backend, allocates an event channel, writes `ring-ref`,
//! `event-channel` and `protocol` (`x86_64-abi`), switches to Initialised, waits for the
//! backend to be Connected, reads `sectors` (512-byte units) and `sector-size`, and
//! switches to Connected. The manifest entry then carries the capacity and the block
//! size and is attached.
//!
//! Each read or write is one request of one segment (the data page, sectors
//! `first_sect..=last_sect` in 512-byte units) and waits for its response. Ring layout:
//! 64-byte header, 32 entries of 112 bytes; a request is `{op u8, nr_segments u8,
//! handle u16, pad u32, id u64, sector u64, seg[11] {gref u32, first u8, last u8,
//! pad u16}}`, a response `{id u64, op u8, pad u8, status i16}`.

use core::sync::atomic::{AtomicU32, Ordering, fence};

use solo5_abi::MftEntry;
use solo5_guest::HostError;

use crate::devices::Pages;
use crate::xenstore::{self, xs_path};
use crate::{hypercall, shared};

const RING: u32 = 32;
const ENTRY: usize = 112;
const MAX_BLOCKS: usize = 8;
const OP_READ: u8 = 0;
const OP_WRITE: u8 = 1;

struct Blk {
    port: u32,
    ring: *mut u8,
    data: *mut u8,
    data_ref: u32,
    vdev: u16,
    req_prod: u32,
    rsp_cons: u32,
    block_size: u32,
    capacity: u64,
}

// SAFETY: the pointers are to pages this runtime owns for good; there is one vCPU.
unsafe impl Send for Blk {}

struct Blks([Option<Blk>; MAX_BLOCKS], [u64; MAX_BLOCKS]);

static BLKS: spin::Mutex<Blks> =
    spin::Mutex::new(Blks([const { None }; MAX_BLOCKS], [0; MAX_BLOCKS]));

fn idx(page: *mut u8, off: usize) -> &'static AtomicU32 {
    // SAFETY: `page` is the ring page, `off` an aligned index field.
    unsafe { &*(page.add(off) as *const AtomicU32) }
}

fn report(vdev: u32, what: &str) {
    let p = xs_path!("xen: blkfront vbd {vdev}: {what}\n");
    crate::console::write(p.as_str().as_bytes());
}

/// The XenStore id of `xvd` + letter `index` (xvda = 51712).
pub(crate) fn vdev(index: u32) -> u32 {
    (202 << 8) | (index * 16)
}

/// Connects vbd number `index` for manifest entry `entry` (handle `handle`).
pub(crate) fn attach(handle: usize, index: u32, entry: &mut MftEntry, pages: &mut Pages) {
    let id = vdev(index);
    match connect(id, pages) {
        Ok(blk) => {
            let mut blks = BLKS.lock();
            if let Some(slot) = blks.0.iter().position(|b| b.is_none()) {
                entry.set_block_info(blk.capacity, blk.block_size as u16);
                entry.attached = 1;
                blks.0[slot] = Some(blk);
                blks.1[slot] = handle as u64;
            } else {
                report(id, "too many block devices");
            }
        }
        Err(why) => report(id, why),
    }
}

fn connect(id: u32, pages: &mut Pages) -> Result<Blk, &'static str> {
    let fe = xs_path!("device/vbd/{id}");
    let fe = fe.as_str();
    let mut buf = [0u8; 128];
    let backend = xenstore::read(xs_path!("{fe}/backend").as_str(), &mut buf)
        .map_err(|_| "no such vbd in XenStore (is it in the domain's disk list?)")?;
    let backend = xs_path!("{}", core::str::from_utf8(backend).unwrap_or(""));
    let backend_id = xenstore::read_u64(xs_path!("{fe}/backend-id").as_str())
        .map_err(|_| "no backend-id")? as u16;
    let oom = "not enough memory for the ring";
    let ring = pages.take().ok_or(oom)?;
    let data = pages.take().ok_or(oom)?;
    idx(ring, 4).store(1, Ordering::Relaxed);
    idx(ring, 12).store(1, Ordering::Relaxed);
    let nogrant = "no grant table entries left";
    let ring_ref = crate::grant::grant(backend_id, ring, false).ok_or(nogrant)?;
    let data_ref = crate::grant::grant(backend_id, data, false).ok_or(nogrant)?;
    let port = hypercall::evtchn_alloc_unbound(backend_id).map_err(|_| "no event channel")?;

    let deadline = shared::system_time_ns() + 20_000_000_000;
    let be_state = xs_path!("{}/state", backend.as_str());
    let st = xenstore::wait_for(be_state.as_str(), &[2, 4], deadline).unwrap_or(0);
    if st != 2 && st != 4 {
        return Err("the backend did not reach InitWait");
    }
    let xw = |k: &str, v: &str| {
        xenstore::write(xs_path!("{fe}/{k}").as_str(), v.as_bytes())
            .map_err(|_| "XenStore write failed")
    };
    xw("ring-ref", xs_path!("{ring_ref}").as_str())?;
    xw("event-channel", xs_path!("{port}").as_str())?;
    xw("protocol", "x86_64-abi")?;
    xw("state", "3")?;
    if xenstore::wait_for(be_state.as_str(), &[4], deadline).unwrap_or(0) != 4 {
        return Err("the backend did not connect");
    }
    let be = backend.as_str();
    let sectors =
        xenstore::read_u64(xs_path!("{be}/sectors").as_str()).map_err(|_| "no sector count")?;
    let block_size =
        xenstore::read_u64(xs_path!("{be}/sector-size").as_str()).unwrap_or(512) as u32;
    if !(512..=4096).contains(&block_size) || !block_size.is_power_of_two() {
        return Err("unsupported sector size");
    }
    xw("state", "4")?;
    Ok(Blk {
        port,
        ring,
        data,
        data_ref,
        vdev: id as u16,
        req_prod: 0,
        rsp_cons: 0,
        block_size,
        capacity: sectors * 512,
    })
}

impl Blk {
    fn io(&mut self, op: u8, offset: u64, len: usize) -> Result<(), HostError> {
        if len != self.block_size as usize
            || !offset.is_multiple_of(u64::from(self.block_size))
            || offset + len as u64 > self.capacity
        {
            return Err(HostError::Invalid);
        }
        let r = self.ring;
        let slot = 64 + (self.req_prod % RING) as usize * ENTRY;
        let id = u64::from(self.req_prod);
        // SAFETY: the slot is inside the ring page, free (one request in flight at most).
        unsafe {
            r.add(slot).write_volatile(op);
            r.add(slot + 1).write_volatile(1);
            (r.add(slot + 2) as *mut u16).write_volatile(self.vdev);
            (r.add(slot + 8) as *mut u64).write_volatile(id);
            (r.add(slot + 16) as *mut u64).write_volatile(offset / 512);
            (r.add(slot + 24) as *mut u32).write_volatile(self.data_ref);
            r.add(slot + 28).write_volatile(0);
            r.add(slot + 29).write_volatile((len / 512 - 1) as u8);
        }
        self.req_prod = self.req_prod.wrapping_add(1);
        fence(Ordering::Release);
        idx(r, 0).store(self.req_prod, Ordering::Release);
        hypercall::evtchn_send(self.port);
        let deadline = shared::system_time_ns() + 30_000_000_000;
        loop {
            idx(r, 12).store(self.rsp_cons.wrapping_add(1), Ordering::Release);
            fence(Ordering::SeqCst);
            if idx(r, 8).load(Ordering::Acquire) != self.rsp_cons {
                break;
            }
            let now = shared::system_time_ns();
            if now >= deadline {
                return Err(HostError::Unspecified);
            }
            shared::wait(&[self.port], deadline.min(now + 100_000_000));
        }
        fence(Ordering::Acquire);
        let slot = 64 + (self.rsp_cons % RING) as usize * ENTRY;
        // SAFETY: the backend wrote this response slot before advancing rsp_prod.
        let status = unsafe { (r.add(slot + 10) as *const i16).read_volatile() };
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        if status == 0 {
            Ok(())
        } else {
            Err(HostError::Unspecified)
        }
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), HostError> {
        self.io(OP_READ, offset, buf.len())?;
        // SAFETY: the data page is ours; the backend finished writing it.
        unsafe { core::ptr::copy_nonoverlapping(self.data, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<(), HostError> {
        if buf.len() > 4096 {
            return Err(HostError::Invalid);
        }
        // SAFETY: the data page is ours and idle (no request in flight).
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), self.data, buf.len()) };
        self.io(OP_WRITE, offset, buf.len())
    }
}

fn with<R>(handle: u64, f: impl FnOnce(&mut Blk) -> R) -> Option<R> {
    let mut blks = BLKS.lock();
    let i = blks.1.iter().position(|&h| h == handle)?;
    blks.0[i].as_mut().map(f)
}

/// Reads one block at byte `offset` of the block device of manifest handle `handle`.
pub(crate) fn read(handle: u64, offset: u64, buf: &mut [u8]) -> Result<(), HostError> {
    with(handle, |b| b.read(offset, buf)).unwrap_or(Err(HostError::Invalid))
}

/// Writes one block at byte `offset` of the block device of manifest handle `handle`.
pub(crate) fn write(handle: u64, offset: u64, buf: &[u8]) -> Result<(), HostError> {
    with(handle, |b| b.write(offset, buf)).unwrap_or(Err(HostError::Invalid))
}
