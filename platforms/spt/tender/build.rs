//! Links `compose-spt` with lazy symbol binding (`-z lazy`; rustc asks for `-z now`).
//!
//! Binding every imported symbol at start-up is a measurable part of a boot that costs
//! about a millisecond of CPU in all (`benches/spt-boot.sh`), and it buys nothing here:
//! full RELRO keeps the GOT read-only against memory corruption, but the tender is Rust
//! before the jump, and after it the guest may write all of the tender's writable memory
//! anyway while no tender code that goes through the PLT ever runs again (the signal
//! report makes raw system calls).
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,lazy");
}
