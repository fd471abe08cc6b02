//! Embeds the device descriptors (`devices/*/*.device.kdl`) and the glue templates
//! (`templates/**`) in the compose binary, so that adding a device is adding a file:
//! the composer has no table of devices of its own.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, accept: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target" && n != "src") {
                collect(&p, accept, out);
            }
        } else if accept(&p) {
            out.push(p);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let mut descriptors = Vec::new();
    collect(
        &root.join("devices"),
        &|p| p.to_string_lossy().ends_with(".device.kdl"),
        &mut descriptors,
    );
    let mut templates = Vec::new();
    collect(&root.join("templates"), &|_| true, &mut templates);
    descriptors.sort();
    templates.sort();
    let mut code = String::from(
        "/// (path relative to the compose root, contents) of every device descriptor.\n",
    );
    code.push_str("pub const DESCRIPTORS: &[(&str, &str)] = &[\n");
    for d in &descriptors {
        let rel = d.strip_prefix(&root).unwrap().display().to_string();
        writeln!(
            code,
            "    ({rel:?}, include_str!({:?})),",
            d.display().to_string()
        )
        .unwrap();
    }
    code.push_str("];\n/// (path relative to templates/, contents) of every glue template.\n");
    code.push_str("pub const TEMPLATES: &[(&str, &str)] = &[\n");
    for t in &templates {
        let rel = t
            .strip_prefix(root.join("templates"))
            .unwrap()
            .display()
            .to_string();
        writeln!(
            code,
            "    ({rel:?}, include_str!({:?})),",
            t.display().to_string()
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(out, code).unwrap();
    println!("cargo:rerun-if-changed={}", root.join("devices").display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("templates").display()
    );
    for p in descriptors.iter().chain(&templates) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
