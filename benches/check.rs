//! Benchmark of `compose check` and glue generation.
//!
//! `cargo bench -p compose --bench check` prints medians (and p90) over many runs of:
//! * in-process: load + resolve (= check), and check + glue generation, for specs/hello.kdl
//!   and for a generated spec of 500 devices; baseline: parsing the same text with the
//!   kdl crate alone;
//! * whole process: `compose check specs/hello.kdl`; baseline: spawning `/bin/true`.
//!
//! The machine is shared and noisy: read the medians, and compare each with its baseline.

use compose::descriptor::Registry;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 9 / 10])
}

fn measure(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..3 {
        f();
    }
    stats(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn report(name: &str, (median, p90): (Duration, Duration)) {
    println!(
        "{name:<52} median {:>9.3} ms   p90 {:>9.3} ms",
        median.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3
    );
}

/// 100 × (netif, ipv4, tcp, block, partition) = 500 devices, plus a console.
fn big_spec(dir: &Path, root: &Path) -> PathBuf {
    let mut s = String::from("unikernel big\nconsole\n");
    for i in 0..100 {
        s.push_str(&format!(
            "netif net{i}\nipv4 stack{i} net=net{i} address=\"10.{}.{}.2/24\"\ntcp tcp{i} stack=stack{i}\nblock disk{i}\npartition part{i} disk=disk{i} sectors=8\n",
            i / 250,
            i % 250
        ));
    }
    s.push_str(&format!(
        "application app {{\n    crate {:?}\n    entry \"echo::start\"\n    use console tcp0\n}}\n",
        root.join("specs/echo").display()
    ));
    let p = dir.join("big.kdl");
    std::fs::write(&p, s).unwrap();
    p
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = std::env::temp_dir().join(format!("compose-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let registry = Registry::builtin().unwrap();
    let hello = root.join("specs/hello.kdl");
    let big = big_spec(&dir, &root);
    for (label, spec, runs) in [("hello.kdl", hello.clone(), 300), ("500 devices", big, 40)] {
        let text = std::fs::read_to_string(&spec).unwrap();
        report(
            &format!("baseline: kdl parse only ({label})"),
            measure(runs, || {
                let _ = kdl::KdlDocument::parse(&text).unwrap();
            }),
        );
        report(
            &format!("check: load + resolve ({label})"),
            measure(runs, || {
                let s = compose::spec::load(&spec, &[], &registry).unwrap();
                let _ = compose::graph::resolve(&s, &registry, "unix").unwrap();
            }),
        );
        report(
            &format!("check + glue generation ({label})"),
            measure(runs, || {
                let s = compose::spec::load(&spec, &[], &registry).unwrap();
                let g = compose::graph::resolve(&s, &registry, "unix").unwrap();
                let _ = compose::glue::generate(&g, &spec).unwrap();
            }),
        );
    }
    report(
        "baseline: spawn /bin/true",
        measure(100, || {
            std::process::Command::new("true").status().unwrap();
        }),
    );
    report(
        "process: compose check specs/hello.kdl",
        measure(100, || {
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_compose"))
                .arg("check")
                .arg(&hello)
                .output()
                .unwrap();
            assert!(o.status.success());
        }),
    );
    std::fs::remove_dir_all(&dir).ok();
}
