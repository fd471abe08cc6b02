//! Lets the final link find `compose-spt.ld` by name.
//!
//! The link search path a library's build script adds is passed to every link that uses
//! the library, so a unikernel may give `-C link-arg=-Tcompose-spt.ld` without knowing
//! where this crate lives (an absolute path works as well).

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rerun-if-changed=compose-spt.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
