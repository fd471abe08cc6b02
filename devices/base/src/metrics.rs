//! Metrics: counters and gauges that the devices themselves keep, for the `monitoring`
//! device to serve (OpenMetrics text, InfluxDB line protocol).
//!
//! Every metric is a `static` here, so that any device crate can count without being
//! wired to the monitoring device, and a unikernel without monitoring pays one relaxed
//! atomic add per event. [`ALL`] lists them in the order they are exposed. Names follow
//! the OpenMetrics conventions: a counter's name is exposed with `_total`, units are in
//! the name (`_bytes`, `_seconds`).

use core::sync::atomic::{AtomicU64, Ordering};

/// What a metric is, for the exposition formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (exposed as `NAME_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One metric: a name, a help text, a kind and a value.
#[derive(Debug)]
pub struct Metric {
    /// The name, `[a-z_]+`, without `_total`.
    pub name: &'static str,
    /// One line saying what it counts.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// An optional label `(key, value)`, e.g. `("status", "200")`.
    pub label: Option<(&'static str, &'static str)>,
    value: AtomicU64,
}

impl Metric {
    /// A counter starting at 0.
    pub const fn counter(name: &'static str, help: &'static str) -> Metric {
        Metric {
            name,
            help,
            kind: Kind::Counter,
            label: None,
            value: AtomicU64::new(0),
        }
    }

    /// A gauge starting at 0.
    pub const fn gauge(name: &'static str, help: &'static str) -> Metric {
        Metric {
            name,
            help,
            kind: Kind::Gauge,
            label: None,
            value: AtomicU64::new(0),
        }
    }

    /// The same metric with a label.
    pub const fn labelled(mut self, key: &'static str, value: &'static str) -> Metric {
        self.label = Some((key, value));
        self
    }

    /// Adds 1.
    #[inline]
    pub fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts 1 (gauges), never below 0.
    #[inline]
    pub fn dec(&self) {
        let _ = self
            .value
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
    }

    /// Sets the value (gauges).
    #[inline]
    pub fn set(&self, v: u64) {
        self.value.store(v, Ordering::Relaxed);
    }

    /// Raises the value to `v` if it is lower (peaks).
    #[inline]
    pub fn raise(&self, v: u64) {
        self.value.fetch_max(v, Ordering::Relaxed);
    }

    /// The value now.
    #[inline]
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

// TCP, kept by every `tcp` implementation (the host's sockets on unix, smoltcp elsewhere).

/// Connections accepted or connected.
pub static TCP_OPENED: Metric = Metric::counter(
    "tcp_connections_opened",
    "TCP connections accepted or connected",
);
/// Connections open now (established and not yet released).
pub static TCP_ESTABLISHED: Metric =
    Metric::gauge("tcp_connections_established", "TCP connections open now");
/// Connections released (closed by either side, reset or timed out).
pub static TCP_CLOSED: Metric =
    Metric::counter("tcp_connections_closed", "TCP connections released");
/// Connections that ended because a deadline passed (idle, slow header, slow reader,
/// handshake).
pub static TCP_TIMED_OUT: Metric = Metric::counter(
    "tcp_connections_timed_out",
    "TCP connections ended by a deadline",
);
/// Payload bytes received.
pub static TCP_BYTES_IN: Metric =
    Metric::counter("tcp_received_bytes", "TCP payload bytes received");
/// Payload bytes sent.
pub static TCP_BYTES_OUT: Metric = Metric::counter("tcp_sent_bytes", "TCP payload bytes sent");

/// Counts a TCP connection with `peer` as opened and established, and says so at the
/// stack's `debug` level (for every `tcp` implementation).
pub fn tcp_opened(peer: core::net::SocketAddrV4) {
    TCP_OPENED.inc();
    TCP_ESTABLISHED.inc();
    if crate::logs::enabled(crate::logs::Source::Stack, crate::logs::Level::Debug) {
        crate::logs::log(
            crate::logs::Source::Stack,
            crate::logs::Level::Debug,
            format_args!("connection with {peer} open"),
        );
    }
}

/// Counts a TCP connection with `peer` as released (`reset` if it ended with a reset), and
/// says so at the stack's `debug` level.
pub fn tcp_released(peer: core::net::SocketAddrV4, reset: bool) {
    TCP_CLOSED.inc();
    TCP_ESTABLISHED.dec();
    if crate::logs::enabled(crate::logs::Source::Stack, crate::logs::Level::Debug) {
        crate::logs::log(
            crate::logs::Source::Stack,
            crate::logs::Level::Debug,
            format_args!(
                "connection with {peer} released{}",
                if reset { " (reset)" } else { "" }
            ),
        );
    }
}

// HTTP, kept by the site server: responses by status class.

/// Responses with a 1xx or 2xx status.
pub static HTTP_2XX: Metric =
    Metric::counter("http_responses", "HTTP responses by status class").labelled("status", "2xx");
/// Responses with a 3xx status.
pub static HTTP_3XX: Metric =
    Metric::counter("http_responses", "HTTP responses by status class").labelled("status", "3xx");
/// Responses with a 4xx status.
pub static HTTP_4XX: Metric =
    Metric::counter("http_responses", "HTTP responses by status class").labelled("status", "4xx");
/// Responses with a 5xx status.
pub static HTTP_5XX: Metric =
    Metric::counter("http_responses", "HTTP responses by status class").labelled("status", "5xx");

/// Counts one HTTP response with `status`.
pub fn http_response(status: u16) {
    match status {
        0..=299 => HTTP_2XX.inc(),
        300..=399 => HTTP_3XX.inc(),
        400..=499 => HTTP_4XX.inc(),
        _ => HTTP_5XX.inc(),
    }
}

// TLS, kept by the `tls` device.

/// Handshakes completed.
pub static TLS_HANDSHAKES_OK: Metric =
    Metric::counter("tls_handshakes", "TLS handshakes by outcome").labelled("outcome", "succeeded");
/// Handshakes that failed (bad input, timeout, peer gone, protocol refused).
pub static TLS_HANDSHAKES_FAILED: Metric =
    Metric::counter("tls_handshakes", "TLS handshakes by outcome").labelled("outcome", "failed");
/// Handshakes in progress now.
pub static TLS_HANDSHAKES_ACTIVE: Metric =
    Metric::gauge("tls_handshakes_active", "TLS handshakes in progress");

// The unikernel, kept by each platform's allocator and clock.

/// Heap bytes allocated now.
pub static HEAP_IN_USE: Metric = Metric::gauge("heap_in_use_bytes", "heap bytes allocated now");
/// The most heap bytes allocated at once since boot.
pub static HEAP_PEAK: Metric = Metric::gauge(
    "heap_peak_bytes",
    "most heap bytes allocated at once since boot",
);
/// Heap bytes the unikernel has (its memory less the image and stacks); 0 where unbounded.
pub static HEAP_SIZE: Metric = Metric::gauge("heap_size_bytes", "heap bytes available in all");

/// Every metric, in exposition order. Metrics sharing a name (labelled) are adjacent.
pub static ALL: &[&Metric] = &[
    &TCP_OPENED,
    &TCP_ESTABLISHED,
    &TCP_CLOSED,
    &TCP_TIMED_OUT,
    &TCP_BYTES_IN,
    &TCP_BYTES_OUT,
    &HTTP_2XX,
    &HTTP_3XX,
    &HTTP_4XX,
    &HTTP_5XX,
    &TLS_HANDSHAKES_OK,
    &TLS_HANDSHAKES_FAILED,
    &TLS_HANDSHAKES_ACTIVE,
    &HEAP_IN_USE,
    &HEAP_PEAK,
    &HEAP_SIZE,
];

/// Records an allocation of `size` bytes (for platform allocators).
#[inline]
pub fn heap_alloc(size: usize) {
    let now = HEAP_IN_USE
        .value
        .fetch_add(size as u64, Ordering::Relaxed)
        .wrapping_add(size as u64);
    HEAP_PEAK.raise(now);
}

/// Records that `size` bytes were freed (for platform allocators).
#[inline]
pub fn heap_free(size: usize) {
    HEAP_IN_USE.value.fetch_sub(size as u64, Ordering::Relaxed);
}

/// A global allocator that counts what `A` allocates into [`HEAP_IN_USE`] and
/// [`HEAP_PEAK`]: two relaxed atomics per allocation. Every platform installs its
/// allocator through it (talc on the guests, the system allocator on unix).
#[derive(Debug)]
pub struct Counting<A>(A);

impl<A> Counting<A> {
    /// Counts the allocations of `inner`.
    pub const fn new(inner: A) -> Counting<A> {
        Counting(inner)
    }

    /// The allocator underneath (to give it memory).
    pub const fn inner(&self) -> &A {
        &self.0
    }
}

// SAFETY: every call is forwarded to `A` unchanged; the wrapper only counts sizes.
unsafe impl<A: core::alloc::GlobalAlloc> core::alloc::GlobalAlloc for Counting<A> {
    #[inline]
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's promises about `layout` are passed on.
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            heap_alloc(layout.size());
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: core::alloc::Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            heap_alloc(layout.size());
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        // SAFETY: `ptr` was allocated by `A` with `layout` (through this wrapper).
        unsafe { self.0.dealloc(ptr, layout) };
        heap_free(layout.size());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: core::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: the caller's promises are passed on.
        let p = unsafe { self.0.realloc(ptr, layout, new) };
        if !p.is_null() {
            if new >= layout.size() {
                heap_alloc(new - layout.size());
            } else {
                heap_free(layout.size() - new);
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_exposable_and_labelled_ones_adjacent() {
        for (i, m) in ALL.iter().enumerate() {
            assert!(
                m.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                m.name
            );
            assert!(!m.name.ends_with("_total"), "{}", m.name);
            let later_same = ALL[i + 1..].iter().position(|n| n.name == m.name);
            if let Some(p) = later_same {
                assert_eq!(p, 0, "{} is split", m.name);
                assert!(m.label.is_some());
            }
        }
    }

    #[test]
    fn the_counting_allocator_tracks_use_and_peak() {
        use core::alloc::{GlobalAlloc, Layout};
        struct Sys;
        // SAFETY: forwards to the test process's allocator.
        unsafe impl GlobalAlloc for Sys {
            unsafe fn alloc(&self, l: Layout) -> *mut u8 {
                // SAFETY: passed on.
                unsafe { std::alloc::System.alloc(l) }
            }
            unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
                // SAFETY: passed on.
                unsafe { std::alloc::System.dealloc(p, l) }
            }
        }
        let a = Counting::new(Sys);
        let before = HEAP_IN_USE.get();
        let l = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: a non-zero layout; the block is freed with its layout below.
        unsafe {
            let p = a.alloc(l);
            assert_eq!(HEAP_IN_USE.get(), before + 1000);
            let p = a.realloc(p, l, 3000);
            assert_eq!(HEAP_IN_USE.get(), before + 3000);
            assert!(HEAP_PEAK.get() >= before + 3000);
            a.dealloc(p, Layout::from_size_align(3000, 8).unwrap());
        }
        assert_eq!(HEAP_IN_USE.get(), before);
    }

    #[test]
    fn gauges_do_not_go_below_zero_and_peaks_only_rise() {
        let g = Metric::gauge("g", "g");
        g.dec();
        assert_eq!(g.get(), 0);
        g.set(5);
        g.raise(3);
        assert_eq!(g.get(), 5);
        g.raise(9);
        assert_eq!(g.get(), 9);
    }
}
