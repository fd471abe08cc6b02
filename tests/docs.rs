//! docs/spec.md documents every device kind and property the descriptors declare.

#[test]
fn the_reference_covers_every_descriptor() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let doc = std::fs::read_to_string(root.join("docs/spec.md")).unwrap();
    let registry = compose::descriptor::Registry::builtin().unwrap();
    for d in registry.all() {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", d.kind)))
            .unwrap_or_else(|| panic!("docs/spec.md has no row for `{}`", d.kind));
        for p in &d.properties {
            assert!(
                row.contains(&format!("`{}`", p.name)),
                "row of `{}` misses property `{}`",
                d.kind,
                p.name
            );
        }
        for s in &d.requires {
            assert!(
                row.contains(&format!("`{}` → {}", s.name, s.interface)),
                "row of `{}` misses slot `{}`",
                d.kind,
                s.name
            );
        }
        for t in &d.targets {
            assert!(
                row.trim_end().ends_with(&format!(
                    "| {} |",
                    d.targets
                        .iter()
                        .map(|t| t.target.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                "row of `{}` misses target {}",
                d.kind,
                t.target
            );
        }
    }
}
