//! Boot arguments: values the spec declares with `bootarg`, given when the unikernel starts.
//!
//! They come from the unikernel's command line (the tender's arguments after the kernel on
//! Solo5, the process arguments on unix) as `--NAME=VALUE` or `--NAME VALUE`; a `bool` may be
//! given as a bare `--NAME`. They are never baked into the image. Everything is checked at
//! boot, before any device starts, so a typo stops the unikernel with a clear message.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// The type of a boot argument, as named in the spec (`type="u16"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Any UTF-8 text.
    Str,
    /// `true` or `false`.
    Bool,
    /// An unsigned 16-bit integer (ports).
    U16,
    /// An unsigned 32-bit integer.
    U32,
    /// An unsigned 64-bit integer.
    U64,
    /// A signed 64-bit integer.
    I64,
    /// An IPv4 address.
    Ipv4,
    /// An IPv4 address with prefix, like `10.0.0.2/24`.
    Ipv4Cidr,
}

impl Kind {
    /// The spec's name for the type.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Str => "string",
            Kind::Bool => "bool",
            Kind::U16 => "u16",
            Kind::U32 => "u32",
            Kind::U64 => "u64",
            Kind::I64 => "i64",
            Kind::Ipv4 => "ipv4",
            Kind::Ipv4Cidr => "ipv4-cidr",
        }
    }

    /// Checks that `value` is of this type.
    pub fn check(self, value: &str) -> Result<(), String> {
        let ok = match self {
            Kind::Str => true,
            Kind::Bool => matches!(value, "true" | "false"),
            Kind::U16 => value.parse::<u16>().is_ok(),
            Kind::U32 => value.parse::<u32>().is_ok(),
            Kind::U64 => value.parse::<u64>().is_ok(),
            Kind::I64 => value.parse::<i64>().is_ok(),
            Kind::Ipv4 => value.parse::<core::net::Ipv4Addr>().is_ok(),
            Kind::Ipv4Cidr => value.parse::<crate::net::Ipv4Cidr>().is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected a value of type {}", self.name()))
        }
    }
}

/// One declared boot argument.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Its name, used as `--NAME`.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// The value when it is not given; `None` makes it required.
    pub default: Option<&'static str>,
    /// One line for `--help`.
    pub doc: &'static str,
}

/// A boot command line that does not fit the declared arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// `--help` was given; the payload is the usage text.
    Help(String),
    /// An argument the spec does not declare.
    Unknown(String),
    /// A declared argument without a value.
    MissingValue(String),
    /// A value of the wrong type.
    Invalid {
        name: String,
        value: String,
        why: String,
    },
    /// A required argument was not given.
    Required(String),
    /// An argument that is not of the `--NAME` form.
    Positional(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Help(usage) => f.write_str(usage),
            Error::Unknown(n) => write!(f, "unknown boot argument --{n}"),
            Error::MissingValue(n) => write!(f, "boot argument --{n} needs a value"),
            Error::Invalid { name, value, why } => {
                write!(f, "boot argument --{name}={value:?}: {why}")
            }
            Error::Required(n) => write!(f, "boot argument --{n} is required"),
            Error::Positional(a) => write!(
                f,
                "unexpected boot argument {a:?} (arguments are --NAME=VALUE)"
            ),
        }
    }
}

/// Parsed and checked boot arguments.
#[derive(Clone, Debug)]
pub struct BootArgs {
    values: Vec<(&'static str, String)>,
}

/// The text `--help` prints.
pub fn usage(specs: &[Spec]) -> String {
    let mut s = String::from("boot arguments:\n");
    for a in specs {
        let default = match a.default {
            Some(d) => format!(" (default: {d})"),
            None => " (required)".to_string(),
        };
        s.push_str(&format!(
            "  --{}=<{}>  {}{}\n",
            a.name,
            a.kind.name(),
            a.doc,
            default
        ));
    }
    s
}

impl BootArgs {
    /// Parses `args` (the command line without the program name) against `specs`.
    pub fn parse<'a>(
        specs: &[Spec],
        args: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, Error> {
        let mut given: Vec<(&'static str, String)> = Vec::new();
        let mut args = args.into_iter().peekable();
        while let Some(arg) = args.next() {
            if arg == "--help" {
                return Err(Error::Help(usage(specs)));
            }
            let Some(body) = arg.strip_prefix("--") else {
                return Err(Error::Positional(arg.to_string()));
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let spec = specs
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| Error::Unknown(name.to_string()))?;
            let value = match inline {
                Some(v) => v.to_string(),
                None if spec.kind == Kind::Bool => match args.peek() {
                    Some(&v) if v == "true" || v == "false" => {
                        args.next();
                        v.to_string()
                    }
                    _ => "true".to_string(),
                },
                None => match args.next() {
                    Some(v) if !v.starts_with("--") => v.to_string(),
                    _ => return Err(Error::MissingValue(name.to_string())),
                },
            };
            spec.kind.check(&value).map_err(|why| Error::Invalid {
                name: name.to_string(),
                value: value.clone(),
                why,
            })?;
            given.retain(|(n, _)| *n != spec.name);
            given.push((spec.name, value));
        }
        let mut values = Vec::with_capacity(specs.len());
        for spec in specs {
            match given.iter().position(|(n, _)| *n == spec.name) {
                Some(i) => values.push((spec.name, given.swap_remove(i).1)),
                None => match spec.default {
                    Some(d) => values.push((spec.name, d.to_string())),
                    None => return Err(Error::Required(spec.name.to_string())),
                },
            }
        }
        Ok(BootArgs { values })
    }

    /// The raw value of `name`.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name` as `T`. The glue asks only for declared names with the declared
    /// type, which [`BootArgs::parse`] has already checked, so this cannot fail there.
    pub fn get<T: core::str::FromStr>(&self, name: &str) -> T {
        match self.raw(name).map(str::parse) {
            Some(Ok(v)) => v,
            _ => panic!("boot argument --{name} was not declared with this type"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[Spec] = &[
        Spec {
            name: "name",
            kind: Kind::Str,
            default: Some("world"),
            doc: "who",
        },
        Spec {
            name: "times",
            kind: Kind::U32,
            default: None,
            doc: "how often",
        },
        Spec {
            name: "loud",
            kind: Kind::Bool,
            default: Some("false"),
            doc: "shout",
        },
    ];

    #[test]
    fn defaults_and_forms() {
        let a = BootArgs::parse(SPECS, ["--times=3", "--loud"]).unwrap();
        assert_eq!(a.get::<u32>("times"), 3);
        assert_eq!(a.raw("name"), Some("world"));
        assert!(a.get::<bool>("loud"));
        let a =
            BootArgs::parse(SPECS, ["--times", "4", "--name", "Ada", "--loud", "false"]).unwrap();
        assert_eq!(a.get::<u32>("times"), 4);
        assert_eq!(a.raw("name"), Some("Ada"));
        assert!(!a.get::<bool>("loud"));
    }

    #[test]
    fn errors() {
        assert_eq!(
            BootArgs::parse(SPECS, []).unwrap_err(),
            Error::Required("times".into())
        );
        assert_eq!(
            BootArgs::parse(SPECS, ["--nme=x"]).unwrap_err(),
            Error::Unknown("nme".into())
        );
        assert!(matches!(
            BootArgs::parse(SPECS, ["--times=x"]).unwrap_err(),
            Error::Invalid { .. }
        ));
        assert_eq!(
            BootArgs::parse(SPECS, ["--times"]).unwrap_err(),
            Error::MissingValue("times".into())
        );
        assert_eq!(
            BootArgs::parse(SPECS, ["x"]).unwrap_err(),
            Error::Positional("x".into())
        );
        assert!(matches!(
            BootArgs::parse(SPECS, ["--help"]).unwrap_err(),
            Error::Help(_)
        ));
    }
}
