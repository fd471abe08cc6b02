//! `compose describe`: the resolved graph as text, JSON or Graphviz dot.
//!
//! The JSON schema (`compose.describe/v1`) is documented in docs/spec.md and pinned by a
//! snapshot test: fields may be added, never renamed or removed, within v1.

use crate::graph::{App, Graph, PropValue, Use};
use serde_json::{Value as Json, json};
use std::fmt::Write as _;

/// The graph as a JSON document.
pub fn json(g: &Graph) -> Json {
    let devices: Vec<Json> = g
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let props: serde_json::Map<String, Json> = d
                .props
                .iter()
                .map(|(k, ty, v)| {
                    let v = match v {
                        PropValue::Given(v) => json!({"type": ty.to_string(), "source": "spec", "value": v.text()}),
                        PropValue::Default(v) => json!({"type": ty.to_string(), "source": "default", "value": v.text()}),
                        PropValue::Param(p, v) => json!({"type": ty.to_string(), "source": "param", "param": p, "value": v.text()}),
                        PropValue::BootArg(b) => json!({"type": ty.to_string(), "source": "bootarg", "bootarg": b}),
                        PropValue::Absent => json!({"type": ty.to_string(), "source": "absent"}),
                    };
                    (k.clone(), v)
                })
                .collect();
            json!({
                "name": d.name,
                "kind": d.descriptor.kind,
                "order": i,
                "implicit": d.implicit,
                "interfaces": d.descriptor.provides,
                "requires": d.deps.iter().map(|(slot, dep)| {
                    let iface = d.descriptor.slot(slot).map(|s| s.interface.clone()).unwrap_or_default();
                    json!({"slot": slot, "interface": iface, "device": g.devices[*dep].name})
                }).collect::<Vec<_>>(),
                "properties": props,
                "crate": d.imp.krate,
                "descriptor": d.descriptor.file,
            })
        })
        .collect();
    let edges: Vec<Json> = g
        .devices
        .iter()
        .flat_map(|d| d.deps.iter().map(move |(slot, dep)| json!({"from": d.name, "to": g.devices[*dep].name, "slot": slot})))
        .collect();
    let application = match &g.app {
        App::User {
            package,
            entry,
            uses,
            ..
        } => {
            let uses: Vec<Json> = uses
                .iter()
                .map(|u| match u {
                    Use::Device(_, n) => json!({"kind": "device", "name": n}),
                    Use::Param(p) => json!({"kind": "param", "name": p}),
                    Use::BootArg(b) => json!({"kind": "bootarg", "name": b}),
                })
                .collect();
            json!({"name": g.app_name, "crate": package, "entry": entry, "uses": uses})
        }
        App::Builtin(i) => json!({"name": g.app_name, "builtin": g.devices[*i].descriptor.kind}),
    };
    json!({
        "schema": "compose.describe/v1",
        "name": g.name,
        "target": g.target,
        "memory": g.memory,
        "devices": devices,
        "edges": edges,
        "params": g.params.iter().map(|p| json!({"name": p.name, "type": p.ty.to_string(), "value": p.value.text(), "overridden": p.overridden, "doc": p.doc})).collect::<Vec<_>>(),
        "bootargs": g.bootargs.iter().map(|b| json!({"name": b.name, "type": b.ty.to_string(), "default": b.default.as_ref().map(|v| v.text()), "doc": b.doc})).collect::<Vec<_>>(),
        "application": application,
    })
}

fn prop_text(v: &PropValue) -> Option<String> {
    match v {
        PropValue::Given(v) => Some(v.text()),
        PropValue::Default(v) => Some(format!("{} (default)", v.text())),
        PropValue::Param(p, v) => Some(format!("{} (param {p})", v.text())),
        PropValue::BootArg(b) => Some(format!("--{b} at boot")),
        PropValue::Absent => None,
    }
}

/// The graph as text, devices in construction order.
pub fn text(g: &Graph) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "unikernel {} for {} ({} MiB)",
        g.name,
        g.target,
        g.memory >> 20
    );
    let _ = writeln!(s, "devices, in construction order:");
    for (i, d) in g.devices.iter().enumerate() {
        let implicit = if d.implicit { " (default)" } else { "" };
        let _ = writeln!(
            s,
            "  {}. {} : {}{implicit} provides {}",
            i + 1,
            d.name,
            d.descriptor.kind,
            d.descriptor.provides.join(", ")
        );
        for (slot, dep) in &d.deps {
            let _ = writeln!(s, "       {slot} → {}", g.devices[*dep].name);
        }
        for (k, _, v) in &d.props {
            if let Some(t) = prop_text(v) {
                let _ = writeln!(s, "       {k} = {t}");
            }
        }
    }
    for p in &g.params {
        let _ = writeln!(
            s,
            "param {} : {} = {}{}",
            p.name,
            p.ty,
            p.value.text(),
            if p.overridden { " (--arg)" } else { "" }
        );
    }
    for b in &g.bootargs {
        let d = b
            .default
            .as_ref()
            .map_or("required".to_string(), |v| format!("default {}", v.text()));
        let _ = writeln!(s, "bootarg --{} : {} ({d})", b.name, b.ty);
    }
    match &g.app {
        App::User { entry, uses, .. } => {
            let names: Vec<String> = uses.iter().map(use_name).collect();
            let _ = writeln!(
                s,
                "application {} = {entry}({})",
                g.app_name,
                names.join(", ")
            );
        }
        App::Builtin(i) => {
            let _ = writeln!(
                s,
                "application {} = built-in {}",
                g.app_name, g.devices[*i].descriptor.kind
            );
        }
    }
    s
}

fn use_name(u: &Use) -> String {
    match u {
        Use::Device(_, n) => n.clone(),
        Use::Param(p) => format!("param {p}"),
        Use::BootArg(b) => format!("--{b}"),
    }
}

fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\\\""))
}

/// The graph in Graphviz dot: devices as boxes (dashed when created by default), edges
/// from user to dependency labelled with the slot, the application as a double octagon.
pub fn dot(g: &Graph) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "digraph {} {{",
        dot_id(&format!("{} ({})", g.name, g.target))
    );
    let _ = writeln!(
        s,
        "  rankdir=BT;\n  node [shape=box, fontname=\"sans-serif\"];\n  edge [fontname=\"sans-serif\", fontsize=10];"
    );
    for d in &g.devices {
        let style = if d.implicit { ", style=dashed" } else { "" };
        let _ = writeln!(
            s,
            "  {} [label=\"{}\\n{}\"{style}];",
            dot_id(&d.name),
            d.name,
            d.descriptor.kind
        );
    }
    for d in &g.devices {
        for (slot, dep) in &d.deps {
            let _ = writeln!(
                s,
                "  {} -> {} [label={}];",
                dot_id(&d.name),
                dot_id(&g.devices[*dep].name),
                dot_id(slot)
            );
        }
    }
    if let App::User { uses, .. } = &g.app {
        let app = format!("app:{}", g.app_name);
        let _ = writeln!(
            s,
            "  {} [label=\"{}\\napplication\", shape=doubleoctagon];",
            dot_id(&app),
            g.app_name
        );
        for u in uses {
            if let Use::Device(_, n) = u {
                let _ = writeln!(s, "  {} -> {};", dot_id(&app), dot_id(n));
            }
        }
    }
    s.push_str("}\n");
    s
}
