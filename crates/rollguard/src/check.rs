//! `rollguard check`: lint Kubernetes manifests for zero-downtime mistakes, and fix the
//! safe ones.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use rollguard_check::{Config, Severity, Source, catalogue, output};

use crate::Failure;

/// Flags of `rollguard check`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 no finding at or above --fail-on, 1 some, 2 bad input.\n\
                        Rules: RG001..RG015; `--explain ID` tells one. See docs/check.md."
)]
pub(crate) struct CheckArgs {
    /// Manifests: files, directories (searched recursively for *.yaml, *.yml and *.json),
    /// or `-` for stdin (e.g. `helm template . | rollguard check -`).
    #[arg(value_name = "PATH", required_unless_present = "explain")]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// The lowest severity that makes the exit status 1.
    #[arg(long, value_enum, value_name = "SEVERITY", default_value_t = FailOn::Error)]
    fail_on: FailOn,
    /// Configuration file (default: `.rollguard.toml` in the current directory or the
    /// nearest parent that has one).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Explain a rule (e.g. RG004): why it matters, how to fix it, examples.
    #[arg(long, value_name = "ID", conflicts_with_all = ["fix", "paths"])]
    explain: Option<String>,
    /// Fix what can be fixed safely, editing the files in place; every other byte stays
    /// as it was. Then report what is left.
    #[arg(long)]
    fix: bool,
    /// With --fix: print the changes as a unified diff instead of writing them.
    #[arg(long, requires = "fix")]
    dry_run: bool,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Diagnostics with a source snippet per finding, and a summary line.
    Human,
    /// One JSON document (schema in docs/check.md).
    Json,
    /// SARIF 2.1.0, for code scanning.
    Sarif,
    /// GitHub Actions workflow commands (annotations on the pull request).
    Github,
}

/// `--fail-on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FailOn {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warning,
    /// Any finding.
    Info,
    /// Exit 0 whatever is found (input errors still exit 2).
    Never,
}

impl FailOn {
    fn fails(self, severity: Severity) -> bool {
        match self {
            Self::Error => severity >= Severity::Error,
            Self::Warning => severity >= Severity::Warning,
            Self::Info => true,
            Self::Never => false,
        }
    }
}

pub(crate) fn run(args: CheckArgs) -> ExitCode {
    match check(args) {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}

fn check(args: CheckArgs) -> Result<ExitCode, Failure> {
    if let Some(id) = &args.explain {
        let rule = catalogue::rule(id).ok_or_else(|| {
            Failure::Input(anyhow!(
                "--explain: unknown rule '{id}' (the rules are RG001 to RG015)"
            ))
        })?;
        println!("{}", rule.explain());
        return Ok(ExitCode::SUCCESS);
    }
    let config = load_config(args.config.as_ref())?;
    if args.fix && !args.dry_run && args.paths.iter().any(|p| p.as_os_str() == "-") {
        return Err(Failure::Input(anyhow!(
            "--fix cannot write back to stdin: add --dry-run to see the changes as a diff"
        )));
    }
    let sources =
        rollguard_check::read_inputs(&args.paths).map_err(|e| Failure::Input(anyhow!(e)))?;
    if sources.is_empty() {
        return Err(Failure::Input(anyhow!(
            "no manifests found in {} (looked for *.yaml, *.yml and *.json)",
            args.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // Every invalid source is reported, in order; the last one is the failure itself.
    let invalid = |mut errors: Vec<rollguard_check::InvalidSource>| {
        let last = errors.pop();
        for e in &errors {
            eprintln!("error: {e}");
        }
        match last {
            Some(e) => Failure::Input(anyhow!(e)),
            None => Failure::Input(anyhow!("invalid input")),
        }
    };
    let (report, sources) = if args.fix {
        let fixed = rollguard_check::fix(&sources, &config).map_err(invalid)?;
        let files: Vec<&Source> = fixed.changed.iter().map(|&i| &fixed.sources[i]).collect();
        if args.dry_run {
            for (i, &index) in fixed.changed.iter().enumerate() {
                let before = &sources[index];
                print!(
                    "{}",
                    rollguard_check::fix::unified_diff(&before.name, &before.text, &files[i].text)
                );
            }
        } else {
            for file in &files {
                if let Some(path) = &file.path {
                    std::fs::write(path, &file.text).map_err(|e| {
                        Failure::Run(anyhow!("{}: cannot write: {e}", path.display()))
                    })?;
                }
            }
        }
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        eprintln!(
            "{} {} edit{} in {} file{}{}{}",
            if args.dry_run { "would make" } else { "made" },
            fixed.edits,
            if fixed.edits == 1 { "" } else { "s" },
            files.len(),
            if files.len() == 1 { "" } else { "s" },
            if names.is_empty() { "" } else { ": " },
            names.join(", ")
        );
        (fixed.report, fixed.sources)
    } else {
        let report = rollguard_check::check(&sources, &config).map_err(invalid)?;
        (report, sources)
    };
    // With --dry-run the diff is stdout, so that it can be piped to `patch`; the report of
    // what would be left, in any format, goes to stderr.
    let to_stderr = args.dry_run;
    let text = match args.format {
        Format::Human => {
            // NO_COLOR turns colors off when set to anything but the empty string.
            let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && if to_stderr {
                    std::io::stderr().is_terminal()
                } else {
                    std::io::stdout().is_terminal()
                };
            output::human(&report, &sources, color)
        }
        Format::Json => output::json(&report, &sources)
            .map_err(|e| Failure::Run(anyhow!("cannot write JSON: {e}")))?,
        Format::Sarif => json_text(&output::sarif(&report, &sources))?,
        Format::Github => output::github(&report, &sources),
    };
    if to_stderr {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    let failed = report
        .findings
        .iter()
        .any(|f| args.fail_on.fails(f.severity));
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn json_text(value: &serde_json::Value) -> Result<String, Failure> {
    serde_json::to_string_pretty(value)
        .map(|text| text + "\n")
        .map_err(|e| Failure::Run(anyhow!("cannot write JSON: {e}")))
}

fn load_config(explicit: Option<&PathBuf>) -> Result<Config, Failure> {
    let file = match explicit {
        Some(f) => Some(f.clone()),
        None => std::env::current_dir()
            .ok()
            .and_then(|d| Config::discover(&d)),
    };
    match file {
        Some(f) => Config::load(&f).map_err(|e| Failure::Input(anyhow!(e))),
        None => Ok(Config::default()),
    }
}
