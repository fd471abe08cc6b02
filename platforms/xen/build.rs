//! Lets the final link find `compose-xen.ld` by name.
//!
//! The link search path a library's build script adds is passed to every link that uses
//! the library, so a unikernel may give `-C link-arg=-Tcompose-xen.ld` without knowing
//! where this crate lives. The script is copied into the build script's own output
//! directory, which lives as long as cargo's target directory: builds of glue in different
//! places share this crate's build (its fingerprint is relative to the glue), so a search
//! path into one glue's source tree would outlive that tree.

fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::copy("compose-xen.ld", out.join("compose-xen.ld"))
        .expect("compose-xen.ld is next to build.rs");
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rerun-if-changed=compose-xen.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
