//! Property tests: the checker never panics, whatever it is fed — arbitrary bytes, and
//! arbitrary KDL documents built from the spec language's own vocabulary (so that they
//! get past the parser and exercise resolution: references, defaults, cycles, types).

use compose::descriptor::Registry;
use proptest::prelude::*;
use std::path::Path;

fn check(dir: &Path, text: &[u8]) {
    let spec = dir.join("spec.kdl");
    std::fs::write(&spec, text).unwrap();
    let registry = Registry::builtin().unwrap();
    let args = vec![("greeting".to_string(), "x".to_string())];
    if let Ok(s) = compose::spec::load(&spec, &args, &registry) {
        for target in compose::target::names() {
            if let Ok(g) = compose::graph::resolve(&s, &registry, target) {
                let _ = compose::describe::json(&g);
                let _ = compose::describe::dot(&g);
                let _ = compose::glue::generate(&g, &spec);
            }
        }
    } else if let Err(diags) = compose::spec::load(&spec, &[], &registry) {
        for d in diags {
            let _ = d.render_plain(80);
        }
    }
}

const NODES: &[&str] = &[
    "unikernel",
    "import",
    "param",
    "bootarg",
    "application",
    "console",
    "clock",
    "wall-clock",
    "random",
    "netif",
    "ipv4",
    "tcp",
    "block",
    "partition",
    "target",
    "memory",
    "crate",
    "entry",
    "use",
    "bogus",
];
const KEYS: &[&str] = &[
    "net",
    "stack",
    "disk",
    "address",
    "gateway",
    "dhcp",
    "sectors",
    "start",
    "sector-size",
    "type",
    "default",
    "doc",
    "builtin",
    "mac",
];
const NAMES: &[&str] = &[
    "a", "b", "c", "service", "stack", "console", "tcp", "greeting", "x-1", "Bad_Name",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(NAMES).prop_map(|n| format!("\"{n}\"")),
        prop::sample::select(NAMES).prop_map(|n| format!("(param)\"{n}\"")),
        prop::sample::select(NAMES).prop_map(|n| format!("(bootarg)\"{n}\"")),
        any::<i64>().prop_map(|i| i.to_string()),
        Just("#true".to_string()),
        Just("#null".to_string()),
        Just("\"10.0.0.2/24\"".to_string()),
        Just("\"64MiB\"".to_string()),
        Just("\"u16\"".to_string()),
        Just("\"../specs/hello\"".to_string()),
        "[a-z0-9./:|-]{0,12}".prop_map(|s| format!("{s:?}")),
    ]
}

fn node(depth: u32) -> BoxedStrategy<String> {
    let entry = prop_oneof![
        value(),
        (prop::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k}={v}"))
    ];
    let leaf = (
        prop::sample::select(NODES),
        prop::collection::vec(entry, 0..4),
    )
        .prop_map(|(n, es)| format!("{n} {}", es.join(" ")));
    if depth == 0 {
        return leaf.boxed();
    }
    (
        leaf,
        prop::option::of(prop::collection::vec(node(depth - 1), 0..4)),
    )
        .prop_map(|(head, children)| match children {
            Some(c) => format!("{head} {{\n{}\n}}", c.join("\n")),
            None => head,
        })
        .boxed()
}

/// Nesting `depth` levels deep, each level a node, maybe a string or comment holding braces
/// (which do not count), maybe a slashdash.
fn nested(depth: usize, decor: &[u8]) -> String {
    let mut s = String::from("unikernel u\n");
    for (i, d) in (0..depth).zip(decor.iter().cycle()) {
        let extra = match d % 6 {
            0 => "\"{{\" ",
            1 => "#\"}}\"# ",
            2 => "/* { /* } */ */ ",
            3 => "/-{} ",
            4 => "\"\"\"\n}\n\"\"\" ",
            _ => "",
        };
        s.push_str(&format!("n{i} {extra}{{\n"));
    }
    s.push_str(&"}\n".repeat(depth));
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        check(dir.path(), &bytes);
    }

    #[test]
    fn arbitrary_kdl_documents_never_panic(nodes in prop::collection::vec(node(2), 0..14)) {
        let dir = tempfile::tempdir().unwrap();
        let doc = nodes.join("\n");
        check(dir.path(), doc.as_bytes());
    }

    #[test]
    fn valid_looking_specs_never_panic(devs in prop::collection::vec((prop::sample::select(&["netif", "ipv4", "tcp", "block", "partition", "console"][..]), prop::sample::select(NAMES), prop::collection::vec((prop::sample::select(KEYS), value()), 0..3)), 0..10)) {
        let dir = tempfile::tempdir().unwrap();
        let mut doc = String::from("unikernel u\nparam greeting default=\"hi\"\n");
        for (kind, name, props) in devs {
            let props: Vec<String> = props.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            doc.push_str(&format!("{kind} {name:?} {}\n", props.join(" ")));
        }
        doc.push_str("application app {\n crate \"../specs/hello\"\n entry \"hello::start\"\n use console a b\n}\n");
        check(dir.path(), doc.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn deep_nesting_is_a_diagnostic(depth in 0usize..1200, decor in prop::collection::vec(any::<u8>(), 1..8)) {
        let dir = tempfile::tempdir().unwrap();
        let text = nested(depth, &decor);
        check(dir.path(), text.as_bytes());
        let registry = Registry::builtin().unwrap();
        let diags = compose::spec::load(&dir.path().join("spec.kdl"), &[], &registry).unwrap_err();
        let deep = diags.iter().any(|d| d.code == "compose::nesting-too-deep");
        prop_assert_eq!(deep, depth > compose::spec::MAX_NESTING, "{:?}", diags.iter().map(|d| d.code).collect::<Vec<_>>());
    }
}
