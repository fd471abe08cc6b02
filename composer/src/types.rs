//! Value types of spec properties, build-time parameters and boot arguments, their
//! checking, and how a checked value is written as a Rust expression in the glue.

use kdl::KdlValue;
use serde::Serialize;
use std::fmt;
use std::net::Ipv4Addr;

/// A value type, as written in specs and descriptors (`type=u16`, `type="embed|block"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ty {
    /// UTF-8 text.
    String,
    /// `#true` / `#false`.
    Bool,
    /// Unsigned integers.
    U8,
    /// Unsigned 16-bit, e.g. ports.
    U16,
    /// Unsigned 32-bit.
    U32,
    /// Unsigned 64-bit.
    U64,
    /// Signed 64-bit.
    I64,
    /// An IPv4 address.
    Ipv4,
    /// An IPv4 address with a prefix, `10.0.0.2/24`.
    Ipv4Cidr,
    /// A byte count with a binary unit: `512KiB`, `64MiB`, `1GiB`, or a plain integer.
    Size,
    /// A path relative to the spec file that names it.
    Path,
    /// A MAC address, `02:00:00:00:00:01`.
    Mac,
    /// One word out of a fixed set.
    Choice(Vec<String>),
}

/// The names accepted in `type=`.
pub const TYPE_NAMES: &[&str] = &[
    "string",
    "bool",
    "u8",
    "u16",
    "u32",
    "u64",
    "i64",
    "ipv4",
    "ipv4-cidr",
    "size",
    "path",
    "mac",
];

impl Ty {
    /// Parses a type name; `a|b|c` is a choice.
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "string" => Ty::String,
            "bool" => Ty::Bool,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "i64" => Ty::I64,
            "ipv4" => Ty::Ipv4,
            "ipv4-cidr" => Ty::Ipv4Cidr,
            "size" => Ty::Size,
            "path" => Ty::Path,
            "mac" => Ty::Mac,
            s if s.contains('|') => Ty::Choice(s.split('|').map(str::to_string).collect()),
            _ => return None,
        })
    }

    /// The type a KDL literal has when no type is declared (for `param x default=3`).
    pub fn infer(v: &KdlValue) -> Ty {
        match v {
            KdlValue::Bool(_) => Ty::Bool,
            KdlValue::Integer(_) => Ty::U64,
            _ => Ty::String,
        }
    }

    /// The Rust type the glue uses for a value of this type.
    pub fn rust_type(&self) -> &'static str {
        match self {
            Ty::String | Ty::Path | Ty::Choice(_) => "&'static str",
            Ty::Bool => "bool",
            Ty::U8 => "u8",
            Ty::U16 => "u16",
            Ty::U32 => "u32",
            Ty::U64 | Ty::Size => "u64",
            Ty::I64 => "i64",
            Ty::Ipv4 => "core::net::Ipv4Addr",
            Ty::Ipv4Cidr => "compose_devices::net::Ipv4Cidr",
            Ty::Mac => "[u8; 6]",
        }
    }

    /// The owned Rust type a boot argument of this type is read as.
    pub fn boot_rust_type(&self) -> &'static str {
        match self {
            Ty::String | Ty::Path | Ty::Choice(_) => "alloc::string::String",
            other => other.rust_type(),
        }
    }

    /// The `compose_devices::bootargs::Kind` variant for boot arguments, if supported.
    pub fn boot_kind(&self) -> Option<&'static str> {
        Some(match self {
            Ty::String => "Str",
            Ty::Bool => "Bool",
            Ty::U16 => "U16",
            Ty::U32 => "U32",
            Ty::U64 => "U64",
            Ty::I64 => "I64",
            Ty::Ipv4 => "Ipv4",
            Ty::Ipv4Cidr => "Ipv4Cidr",
            _ => return None,
        })
    }

    /// Checks a KDL value against this type.
    pub fn check(&self, v: &KdlValue) -> Result<Value, TypeError> {
        let mismatch = |hint: Option<String>| TypeError {
            expected: self.to_string(),
            found: describe(v),
            hint,
        };
        match (self, v) {
            (Ty::String, KdlValue::String(s)) => Ok(Value::Str(s.clone())),
            (Ty::Path, KdlValue::String(s)) if !s.is_empty() => Ok(Value::Str(s.clone())),
            (Ty::Bool, KdlValue::Bool(b)) => Ok(Value::Bool(*b)),
            (Ty::Bool, KdlValue::String(s)) if s == "true" || s == "false" => {
                Err(mismatch(Some(format!("KDL booleans are written #{s}"))))
            }
            (Ty::U8 | Ty::U16 | Ty::U32 | Ty::U64 | Ty::I64, KdlValue::Integer(i)) => {
                let (lo, hi): (i128, i128) = match self {
                    Ty::U8 => (0, u8::MAX.into()),
                    Ty::U16 => (0, u16::MAX.into()),
                    Ty::U32 => (0, u32::MAX.into()),
                    Ty::U64 => (0, u64::MAX.into()),
                    _ => (i64::MIN.into(), i64::MAX.into()),
                };
                if (lo..=hi).contains(i) {
                    Ok(Value::Int(*i))
                } else {
                    Err(mismatch(Some(format!("{self} ranges from {lo} to {hi}"))))
                }
            }
            (Ty::U8 | Ty::U16 | Ty::U32 | Ty::U64 | Ty::I64, KdlValue::String(s))
                if s.parse::<i128>().is_ok() =>
            {
                Err(mismatch(Some(format!(
                    "write the number without quotes: {s}"
                ))))
            }
            (Ty::Size, KdlValue::Integer(i)) if *i >= 0 && *i <= u64::MAX as i128 => {
                Ok(Value::Int(*i))
            }
            (Ty::Size, KdlValue::String(s)) => parse_size(s)
                .map(|b| Value::Int(b.into()))
                .map_err(|h| mismatch(Some(h))),
            (Ty::Ipv4, KdlValue::String(s)) => s
                .parse::<Ipv4Addr>()
                .map(Value::Ipv4)
                .map_err(|_| mismatch(Some("an IPv4 address looks like 10.0.0.1".into()))),
            (Ty::Ipv4Cidr, KdlValue::String(s)) => parse_cidr(s).map_err(|h| mismatch(Some(h))),
            (Ty::Mac, KdlValue::String(s)) => parse_mac(s)
                .map(Value::Mac)
                .ok_or_else(|| mismatch(Some("a MAC address looks like 02:00:00:00:00:01".into()))),
            (Ty::Choice(options), KdlValue::String(s)) => {
                if options.iter().any(|o| o == s) {
                    Ok(Value::Str(s.clone()))
                } else {
                    Err(mismatch(Some(crate::diag::suggest(
                        s,
                        options.iter().map(String::as_str),
                    ))))
                }
            }
            _ => Err(mismatch(None)),
        }
    }

    /// Checks a value given as text (on the command line, `--arg NAME=VALUE`).
    pub fn check_text(&self, text: &str) -> Result<Value, TypeError> {
        let v = match self {
            Ty::Bool => match text {
                "true" => KdlValue::Bool(true),
                "false" => KdlValue::Bool(false),
                _ => KdlValue::String(text.to_string()),
            },
            Ty::U8 | Ty::U16 | Ty::U32 | Ty::U64 | Ty::I64 => match text.parse::<i128>() {
                Ok(i) => KdlValue::Integer(i),
                Err(_) => KdlValue::String(text.to_string()),
            },
            _ => KdlValue::String(text.to_string()),
        };
        self.check(&v).map_err(|mut e| {
            if matches!(v, KdlValue::String(_)) && !matches!(self, Ty::String | Ty::Path) {
                e.found = format!("`{text}`");
            }
            e.hint = e.hint.filter(|h| !h.starts_with("write the number"));
            e
        })
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::String => f.write_str("string"),
            Ty::Bool => f.write_str("bool"),
            Ty::U8 => f.write_str("u8"),
            Ty::U16 => f.write_str("u16"),
            Ty::U32 => f.write_str("u32"),
            Ty::U64 => f.write_str("u64"),
            Ty::I64 => f.write_str("i64"),
            Ty::Ipv4 => f.write_str("ipv4"),
            Ty::Ipv4Cidr => f.write_str("ipv4-cidr"),
            Ty::Size => f.write_str("size"),
            Ty::Path => f.write_str("path"),
            Ty::Mac => f.write_str("mac"),
            Ty::Choice(o) => f.write_str(&o.join("|")),
        }
    }
}

/// A value that does not fit its type.
#[derive(Debug, Clone)]
pub struct TypeError {
    /// The type wanted.
    pub expected: String,
    /// What was found, described for a person.
    pub found: String,
    /// How to fix it.
    pub hint: Option<String>,
}

fn describe(v: &KdlValue) -> String {
    match v {
        KdlValue::String(s) => format!("the string {s:?}"),
        KdlValue::Integer(i) => format!("the integer {i}"),
        KdlValue::Float(x) => format!("the number {x}"),
        KdlValue::Bool(b) => format!("#{b}"),
        KdlValue::Null => "#null".into(),
    }
}

/// A checked value.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// Text, a path or a choice.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// An integer or a size in bytes.
    Int(i128),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An address with a prefix.
    Cidr { address: Ipv4Addr, prefix: u8 },
    /// A MAC address.
    Mac([u8; 6]),
}

impl Value {
    /// The value as a Rust expression of [`Ty::rust_type`].
    pub fn rust_expr(&self) -> String {
        match self {
            Value::Str(s) => format!("{s:?}"),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Ipv4(a) => ipv4_expr(a),
            Value::Cidr { address, prefix } => format!(
                "compose_devices::net::Ipv4Cidr {{ address: {}, prefix: {prefix} }}",
                ipv4_expr(address)
            ),
            Value::Mac(m) => format!("{m:#04x?}")
                .replace(['\n', ' '], "")
                .replace(",]", "]")
                .replace(',', ", "),
        }
    }

    /// The value as text (for boot-argument defaults and `describe`).
    pub fn text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Ipv4(a) => a.to_string(),
            Value::Cidr { address, prefix } => format!("{address}/{prefix}"),
            Value::Mac(m) => m
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        }
    }
}

/// A rule a descriptor puts on a property's value beyond its type, written as an attribute
/// of the `property` node: `min=512`, `power-of-two=#true`, `unicast=#true`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Constraint {
    /// An integer at least this large.
    Min(i128),
    /// An integer that is a power of two.
    PowerOfTwo,
    /// A MAC address of one interface: neither multicast (nor so broadcast).
    Unicast,
}

/// A value that breaks a [`Constraint`].
#[derive(Clone, Debug)]
pub struct ConstraintError {
    /// The diagnostic code.
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

/// The descriptor attributes that are constraints.
pub const CONSTRAINT_ATTRIBUTES: &[&str] = &["min", "power-of-two", "unicast"];

impl Constraint {
    /// The constraint a descriptor attribute declares, if `key` is one.
    pub fn parse(key: &str, v: &KdlValue) -> Option<Result<Constraint, String>> {
        Some(match (key, v) {
            ("min", KdlValue::Integer(i)) => Ok(Constraint::Min(*i)),
            ("power-of-two", KdlValue::Bool(true)) => Ok(Constraint::PowerOfTwo),
            ("unicast", KdlValue::Bool(true)) => Ok(Constraint::Unicast),
            ("min", _) => Err("min= takes an integer".into()),
            ("power-of-two" | "unicast", _) => Err(format!("{key}= takes #true")),
            _ => return None,
        })
    }

    /// The type a constraint applies to, for checking descriptors.
    pub fn fits(&self, ty: &Ty) -> bool {
        match self {
            Constraint::Min(_) | Constraint::PowerOfTwo => {
                matches!(
                    ty,
                    Ty::U8 | Ty::U16 | Ty::U32 | Ty::U64 | Ty::I64 | Ty::Size
                )
            }
            Constraint::Unicast => *ty == Ty::Mac,
        }
    }

    /// Checks a value of the property's type.
    pub fn check(&self, v: &Value) -> Result<(), ConstraintError> {
        match (self, v) {
            (Constraint::Min(min), Value::Int(i)) if i < min => Err(ConstraintError {
                code: "compose::out-of-range",
                message: format!("must be at least {min}, found {i}"),
                hint: format!("the smallest value is {min}"),
            }),
            (Constraint::PowerOfTwo, Value::Int(i)) if *i <= 0 || i & (i - 1) != 0 => {
                let up = if *i <= 0 {
                    1
                } else {
                    (*i as u128).next_power_of_two()
                };
                let down = if *i <= 1 { 1 } else { up / 2 };
                Err(ConstraintError {
                    code: "compose::not-power-of-two",
                    message: format!("must be a power of two, found {i}"),
                    hint: if down == up {
                        format!("the nearest power of two is {up}")
                    } else {
                        format!("the nearest powers of two are {down} and {up}")
                    },
                })
            }
            (Constraint::Unicast, Value::Mac(m)) if m[0] & 1 == 1 => {
                let what = if m.iter().all(|b| *b == 0xff) {
                    "the broadcast address"
                } else {
                    "a multicast address"
                };
                Err(ConstraintError {
                    code: "compose::multicast-mac",
                    message: format!("must be one interface's address, found {what}"),
                    hint: "the lowest bit of the first byte marks multicast; a locally administered unicast address looks like 02:00:00:00:00:01".into(),
                })
            }
            _ => Ok(()),
        }
    }
}

fn ipv4_expr(a: &Ipv4Addr) -> String {
    let [x, y, z, w] = a.octets();
    format!("core::net::Ipv4Addr::new({x}, {y}, {z}, {w})")
}

/// Parses `64MiB` and friends. Decimal units are refused: they are a common source of
/// off-by-5% memory settings.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| "a size is a whole number with a unit, like 64MiB".to_string())?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" | "K" | "k" => {
            return Err(format!("sizes use binary units: did you mean {n}KiB?"));
        }
        "MB" | "M" | "m" => return Err(format!("sizes use binary units: did you mean {n}MiB?")),
        "GB" | "G" | "g" => return Err(format!("sizes use binary units: did you mean {n}GiB?")),
        other => {
            let hint = crate::diag::suggest(other, ["B", "KiB", "MiB", "GiB", "TiB"]);
            return Err(format!("unknown unit `{other}`: {hint}"));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| "the size does not fit in 64 bits".to_string())
}

fn parse_cidr(s: &str) -> Result<Value, String> {
    let Some((a, p)) = s.split_once('/') else {
        return Err("an address with prefix looks like 10.0.0.2/24".into());
    };
    let address: Ipv4Addr = a
        .parse()
        .map_err(|_| format!("`{a}` is not an IPv4 address"))?;
    let prefix: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("`{p}` is not a prefix length (0 to 32)"))?;
    Ok(Value::Cidr { address, prefix })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        m[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("64MB").unwrap_err().contains("64MiB"));
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn constraints() {
        let p2 = Constraint::PowerOfTwo;
        assert!(p2.check(&Value::Int(512)).is_ok());
        assert!(p2.check(&Value::Int(4096)).is_ok());
        for bad in [0, -8, 3, 1000, 513] {
            assert_eq!(
                p2.check(&Value::Int(bad)).unwrap_err().code,
                "compose::not-power-of-two"
            );
        }
        assert!(
            p2.check(&Value::Int(1000))
                .unwrap_err()
                .hint
                .contains("512 and 1024")
        );
        let min = Constraint::Min(512);
        assert!(min.check(&Value::Int(512)).is_ok());
        assert_eq!(
            min.check(&Value::Int(256)).unwrap_err().code,
            "compose::out-of-range"
        );
        let u = Constraint::Unicast;
        assert!(u.check(&Value::Mac([2, 0, 0, 0, 0, 1])).is_ok());
        assert!(u.check(&Value::Mac([0xfe, 0, 0, 0, 0, 1])).is_ok());
        let bc = u.check(&Value::Mac([0xff; 6])).unwrap_err();
        assert!(bc.message.contains("broadcast"));
        let mc = u.check(&Value::Mac([0x01, 0, 0x5e, 0, 0, 1])).unwrap_err();
        assert!(mc.message.contains("multicast"));
    }

    #[test]
    fn exprs() {
        assert_eq!(
            Value::Ipv4("10.0.0.1".parse().unwrap()).rust_expr(),
            "core::net::Ipv4Addr::new(10, 0, 0, 1)"
        );
        assert_eq!(
            Value::Mac([2, 0, 0, 0, 0, 0xab]).rust_expr(),
            "[0x02, 0x00, 0x00, 0x00, 0x00, 0xab]"
        );
        assert_eq!(Value::Str("a\"b".into()).rust_expr(), "\"a\\\"b\"");
    }
}
