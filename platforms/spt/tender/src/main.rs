//! The `compose-spt` binary: see the library for what it does.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(compose_spt::main(&args));
}
