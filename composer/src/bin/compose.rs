//! The `compose` command line: parses arguments and calls `compose::ops`.

use clap::{Args, CommandFactory, Parser, Subcommand};
use compose::build::MessageFormat;
use compose::ops::{self, BuildOptions, Failure, LoadOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// Declarative build system and image composer for Rust unikernels.
///
/// A KDL spec declares a unikernel's devices and application; compose checks it, resolves
/// the device graph, generates Rust glue and builds an image for a target.
#[derive(Parser, Debug)]
#[command(name = "compose", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    /// Show more: the exact cargo command the build runs.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse and resolve a spec and report any mistake; nothing is built.
    Check(SpecArgs),
    /// Show the resolved device graph for a target.
    Describe {
        #[command(flatten)]
        spec: SpecArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: DescribeFormat,
    },
    /// Generate the glue, compile it and place the image.
    Build {
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Build if needed, then run the unikernel; arguments after `--` are its boot arguments.
    Run {
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        out: OutArgs,
        /// Boot arguments, e.g. `-- --name=Ada`.
        #[arg(last = true)]
        boot_args: Vec<String>,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
struct SpecArgs {
    /// The spec file.
    spec: PathBuf,
    /// The target: unix, hvt, spt, xen or rpi4 (default: the spec's, else unix).
    #[arg(long, short)]
    target: Option<String>,
    /// Set a build-time parameter declared with `param`.
    #[arg(long = "arg", value_name = "NAME=VALUE", value_parser = compose::spec::parse_arg)]
    args: Vec<(String, String)>,
}

#[derive(Args, Debug)]
struct OutArgs {
    /// Where to put the image (default: dist/ next to the spec).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// How to report progress and errors.
    #[arg(long, value_enum, default_value = "human")]
    message_format: MessageFormat,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum DescribeFormat {
    Text,
    Json,
    Dot,
}

impl SpecArgs {
    fn load(&self) -> LoadOptions {
        LoadOptions { spec: self.spec.clone(), target: self.target.clone(), args: self.args.clone() }
    }
}

fn report(f: &Failure) {
    match f {
        Failure::Spec(diags) => {
            for d in diags {
                eprintln!("{:?}", miette::Report::new(d.clone()));
            }
        }
        Failure::Build(e) => eprintln!("error: {e}"),
        Failure::Other(m) => eprintln!("error: {m}"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Colours and terminal-sized output on a terminal; elsewhere (logs, CI, tests) plain
    // Unicode at a fixed width, so the same mistake always reads the same.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    miette::set_hook(Box::new(move |_| {
        let opts = miette::MietteHandlerOpts::new().width(100);
        let opts = if terminal { opts } else { opts.graphical_theme(miette::GraphicalTheme::unicode_nocolor()).terminal_links(false) };
        Box::new(opts.build())
    }))
    .ok();
    let result: Result<i32, Failure> = match &cli.command {
        Command::Check(spec) => ops::check(&spec.load()).map(|(_, g)| {
            eprintln!("{}: ok ({} devices, target {})", spec.spec.display(), g.devices.len(), g.target);
            0
        }),
        Command::Describe { spec, format } => ops::check(&spec.load()).map(|(_, g)| {
            match format {
                DescribeFormat::Text => print!("{}", compose::describe::text(&g)),
                DescribeFormat::Json => println!("{}", serde_json::to_string_pretty(&compose::describe::json(&g)).unwrap_or_default()),
                DescribeFormat::Dot => print!("{}", compose::describe::dot(&g)),
            }
            0
        }),
        Command::Build { spec, out } => {
            let opts = BuildOptions { load: spec.load(), out: out.out.clone(), format: out.message_format, verbose: cli.verbose };
            ops::build(&opts).map(|_| 0)
        }
        Command::Run { spec, out, boot_args } => {
            let opts = BuildOptions { load: spec.load(), out: out.out.clone(), format: out.message_format, verbose: cli.verbose };
            ops::run(&opts, boot_args)
        }
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "compose", &mut std::io::stdout());
            Ok(0)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(f) => {
            report(&f);
            ExitCode::from(f.exit_code() as u8)
        }
    }
}
