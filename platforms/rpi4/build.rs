//! Lets the final link find `compose-rpi4.ld` by name (as compose-hvt-guest does for its
//! script): the script is copied into this build script's output directory, which is
//! added to the link search path of every link that uses the crate.

fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::copy("compose-rpi4.ld", out.join("compose-rpi4.ld"))
        .expect("compose-rpi4.ld is next to build.rs");
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rerun-if-changed=compose-rpi4.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
