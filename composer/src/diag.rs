//! Spec diagnostics: every mistake in a spec becomes one [`Diag`], a miette diagnostic that
//! names the file, line and column, labels the offending span and, where it helps, says
//! what to do instead.

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A spec file's text, shared by every diagnostic that points into it.
#[derive(Clone, Debug)]
pub struct Source {
    /// The path as the user wrote it (relative paths stay relative, for stable messages).
    pub path: PathBuf,
    /// The file's contents.
    pub text: Arc<str>,
    named: NamedSource<Arc<str>>,
}

impl Source {
    /// A source read from `path`, displayed as `shown`.
    pub fn new(path: &Path, text: impl Into<Arc<str>>) -> Self {
        let text: Arc<str> = text.into();
        let named = NamedSource::new(path.display().to_string(), text.clone()).with_language("kdl");
        Source {
            path: path.to_path_buf(),
            text,
            named,
        }
    }
}

/// A place in a spec: which file, which bytes.
#[derive(Clone, Debug)]
pub struct Span {
    /// The file.
    pub source: Source,
    /// The byte range.
    pub span: SourceSpan,
}

impl Span {
    /// The 1-based line and column of the start of the span.
    pub fn line_col(&self) -> (usize, usize) {
        let upto = &self.source.text[..self.span.offset().min(self.source.text.len())];
        let line = upto.matches('\n').count() + 1;
        let col = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

/// The code of a command-line mistake (`--arg`, `--target`, `--format`).
pub const BAD_ARG: &str = "compose::bad-arg";

/// One spec error.
#[derive(Debug, Clone)]
pub struct Diag {
    /// A stable code, `compose::<kind>`, that tests pin and docs explain.
    pub code: &'static str,
    /// The one-line message.
    pub message: String,
    /// Where; `None` for errors about the command line rather than the file.
    pub at: Option<Span>,
    /// The label on the primary span.
    pub label: String,
    /// Further labelled spans in the same file (every member of a cycle, the first definition).
    pub others: Vec<(SourceSpan, String)>,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diag {
    /// A diagnostic at `at`.
    pub fn new(
        code: &'static str,
        message: impl Into<String>,
        at: &Span,
        label: impl Into<String>,
    ) -> Self {
        Diag {
            code,
            message: message.into(),
            at: Some(at.clone()),
            label: label.into(),
            others: Vec::new(),
            help: None,
        }
    }

    /// A diagnostic with no place in a file (a bad `--arg`, a missing file).
    pub fn nowhere(code: &'static str, message: impl Into<String>) -> Self {
        Diag {
            code,
            message: message.into(),
            at: None,
            label: String::new(),
            others: Vec::new(),
            help: None,
        }
    }

    /// Whether this is a mistake on the command line (a `compose::bad-arg`; it may point at
    /// the spec line the argument contradicts) rather than in the spec.
    pub fn is_command_line(&self) -> bool {
        self.code == BAD_ARG
    }

    /// Adds a help line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a help line if there is one.
    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        self.help = help.or(self.help);
        self
    }

    /// Adds another labelled span (same file as the primary one).
    pub fn also(mut self, at: &Span, label: impl Into<String>) -> Self {
        self.others.push((at.span, label.into()));
        self
    }

    /// Renders the diagnostic as text, without colour, at a fixed width (for tests and logs).
    pub fn render_plain(&self, width: usize) -> String {
        let mut out = String::new();
        let handler =
            miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
                .with_width(width)
                .with_links(false);
        // Rendering into a String cannot fail.
        let _ = handler.render_report(&mut out, self);
        out
    }

    /// The file, line and column, if the diagnostic has a place.
    pub fn location(&self) -> Option<(String, usize, usize)> {
        self.at.as_ref().map(|s| {
            let (l, c) = s.line_col();
            (s.source.path.display().to_string(), l, c)
        })
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diag {}

impl Diagnostic for Diag {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.at
            .as_ref()
            .map(|s| &s.source.named as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let at = self.at.as_ref()?;
        let primary = LabeledSpan::new_primary_with_span(Some(self.label.clone()), at.span);
        let others = self
            .others
            .iter()
            .map(|(s, l)| LabeledSpan::new_with_span(Some(l.clone()), *s));
        Some(Box::new(std::iter::once(primary).chain(others)))
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// "did you mean `x`?" or a list of what is allowed.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str> + Clone) -> String {
    match did_you_mean(word, candidates.clone()) {
        Some(c) => format!("did you mean `{c}`?"),
        None => {
            let all: Vec<&str> = candidates.into_iter().collect();
            format!("expected one of: {}", all.join(", "))
        }
    }
}
