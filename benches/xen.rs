//! The xen target's figures under compose's Xen sandbox (benches/xen.sh builds the images
//! and runs this with their paths): one boot of Xen in QEMU, in which
//!
//! * `HELLO_RUNS` hello guests run in turn: the time from `xl create` to the guest's first
//!   console line (its greeting), median and spread, next to the time `xl create` takes to
//!   the domain's end;
//! * echo runs on netfront, and a client in dom0 (bash, one TCP connection) makes
//!   `ECHO_TRIPS` round trips to it, then the same number to an echo server in dom0
//!   itself (busybox `nc -e cat` on its loopback): the ratio is netfront's cost, measured
//!   by the same client in the same emulator.
//!
//! Everything runs under TCG: quote ratios, not absolute speeds.

use std::path::PathBuf;
use std::time::Duration;

use compose::xen_sandbox::{Guest, Sandbox};

fn env_path(k: &str) -> PathBuf {
    PathBuf::from(std::env::var(k).unwrap_or_else(|_| panic!("set {k} (benches/xen.sh does)")))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// A bash client: `n` round trips of one line over one connection to `addr:port`,
/// printing `trips N seconds S`.
fn client(addr: &str, port: u16, n: u32) -> String {
    format!(
        "exec 3<>/dev/tcp/{addr}/{port} || exit 1\n\
         echo warm >&3; read -r l <&3\n\
         s=$EPOCHREALTIME\n\
         for ((i = 0; i < {n}; i++)); do echo ping >&3; read -r l <&3 || exit 1; done\n\
         e=$EPOCHREALTIME\n\
         exec 3>&-\n\
         echo \"trips {n} seconds $(awk -v s=$s -v e=$e 'BEGIN {{ printf \"%.4f\", e - s }}')\"\n"
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("HELLO_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let trips: u32 = std::env::var("ECHO_TRIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let hello = env_path("XEN_BENCH_HELLO");
    let echo = env_path("XEN_BENCH_ECHO");
    let dir = compose::xen_sandbox::Sandbox::default_dir().expect("a sandbox directory");
    let sandbox = Sandbox::prepare(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut guests = Vec::new();
    for _ in 0..runs {
        guests.push(Guest {
            image: hello.clone(),
            xl: vec!["memory = 32".into(), "cmdline = \"--times=1\"".into()],
            ..Guest::default()
        });
    }
    let wait = "for i in $(seq 120); do r=$(echo up | timeout 3 nc 10.0.0.2 7777); [ -n \"$r\" ] && break; sleep 0.5; done\n";
    let hook = format!(
        "#!/bin/bash\n{wait}\
         echo \"netfront $(bash -c '{}')\"\n\
         (nc -ll -p 7778 -e cat &) ; sleep 1\n\
         echo \"loopback $(bash -c '{}')\"\n\
         xl destroy $1\n",
        client("10.0.0.2", 7777, trips).replace('\'', "'\\''"),
        client("127.0.0.1", 7778, trips).replace('\'', "'\\''"),
    );
    guests.push(Guest {
        image: echo,
        xl: vec![
            "memory = 64".into(),
            "vif = [ 'bridge=xenbr0' ]".into(),
            "cmdline = \"--ipv4=10.0.0.2/24\"".into(),
        ],
        hook: Some(hook),
        timeout: Some(600),
        ..Guest::default()
    });
    let boot = sandbox
        .boot(&guests, Duration::from_secs(3000))
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "== Xen sandbox: toolstack ready {:.1} s after QEMU started; whole boot {:.1} s",
        boot.ready_after.unwrap_or(f64::NAN),
        boot.elapsed.as_secs_f64()
    );
    let mut first: Vec<f64> = boot.guests[..runs]
        .iter()
        .filter_map(|g| g.create_to_console)
        .collect();
    let mut end: Vec<f64> = boot.guests[..runs]
        .iter()
        .filter_map(|g| g.create_to_end)
        .collect();
    assert_eq!(
        first.len(),
        runs,
        "a hello guest printed nothing: {:?}",
        boot.guests
    );
    let (lo, hi) = (
        first.iter().cloned().fold(f64::INFINITY, f64::min),
        first.iter().cloned().fold(0.0, f64::max),
    );
    println!(
        "== hello: xl create -> greeting, median of {runs} guests in one boot: {:.2} s (min {lo:.2}, max {hi:.2}); xl create -> domain end: {:.2} s",
        median(&mut first),
        median(&mut end)
    );
    let g = &boot.guests[runs];
    let rate = |what: &str| -> Option<f64> {
        let l = g.hook.lines().find(|l| l.starts_with(what))?;
        let w: Vec<&str> = l.split_whitespace().collect();
        let n: f64 = w.get(2)?.parse().ok()?;
        let s: f64 = w.get(4)?.parse().ok()?;
        Some(n / s)
    };
    match (rate("netfront"), rate("loopback")) {
        (Some(nf), Some(lb)) => println!(
            "== echo: {trips} round trips over one connection from dom0: netfront {nf:.1}/s, dom0 loopback {lb:.1}/s (ratio {:.2})",
            nf / lb
        ),
        _ => println!(
            "== echo: no figures; the hook said:\n{}\nconsole:\n{}",
            g.hook, g.console
        ),
    }
}
