//! The `mover` binary: parse, run one command, map the outcome to an exit code.

//!
//! Everything a command does is in the `mover` library; this binary parses the arguments
//! (`args`, with `config` profiles), opens the repository and reads secrets (`repo`), calls the
//! library from one module per command group (`cmd`), prints its typed reports (`output`,
//! `events`) and maps the outcome to an exit code (`Exit`).

/// Writes a line to stderr for people. A stderr that cannot be written (closed, full) is not
/// the command's failure and never a panic: the exit code still tells.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod args;
mod bundle;
mod cmd;
mod config;
mod doctor;
mod events;
mod generate;
mod human;
mod output;
mod repo;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;

use args::{ArchiveCommand, Cli, Command, KeyCommand, RepairCommand};
use chunker::crypto::Aead;
use repo::Secrets;

/// Exit codes; see the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    Success = 0,
    Failure = 1,
    Usage = 2,
    Warnings = 3,
    Interrupted = 130,
}

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(e) => return usage_error(&e),
            Err(e) => {
                note!("mover: {}; see `mover --help`", one_line(&e));
                return ExitCode::from(Exit::Usage as u8);
            }
        },
    };
    if let Err(e) = init_logging(&cli) {
        note!("mover: {}; see `mover --help`", one_line(&e));
        return ExitCode::from(Exit::Usage as u8);
    }
    // Pipelines allocate and free a chunk's buffers at a high rate: keeping freed buffers
    // in the heap saves page faults. A long-running server must also stay within its cache's
    // budget, which freed buffers kept in one arena per thread would exceed: one arena.
    match cli.command {
        Command::Serve(_) => mover::sys::keep_freed_buffers_shared(),
        _ => mover::sys::keep_freed_buffers(),
    }
    // After the allocator's settings: the handlers start the watchdog thread.
    mover::sys::install_signal_handlers(events::stuck_on_input);
    let (command, json, data_on_stdout) = match &cli.command {
        Command::Init(_) => ("init", false, false),
        Command::Backup(a) => (
            "backup",
            a.json,
            a.archive.to_archive.as_deref() == Some("-"),
        ),
        Command::Snapshots(_) => ("snapshots", false, false),
        Command::Restore(a) => ("restore", a.json, a.to == "-"),
        Command::Serve(a) => ("serve", a.json, false),
        Command::Verify(a) => ("verify", a.json, false),
        Command::Forget(a) => ("forget", a.json, false),
        Command::Gc(a) => ("gc", a.json, false),
        Command::Check(a) => ("check", a.json, false),
        Command::Repair(RepairCommand::Index(a)) => ("repair index", a.json, false),
        Command::Repair(RepairCommand::Snapshots(a)) => ("repair snapshots", a.json, false),
        Command::Repair(RepairCommand::Config(a)) => ("repair config", a.json, false),
        Command::Doctor(a) => ("doctor", a.json, false),
        Command::SupportBundle(a) => ("support-bundle", false, a.out == "-"),
        Command::Benchmark(a) => ("benchmark", a.json, false),
        Command::Completions(_) => ("completions", false, true),
        Command::Man => ("man", false, true),
        Command::Archive(ArchiveCommand::Ls(a)) => ("archive ls", a.json, false),
        Command::Archive(ArchiveCommand::Verify(a)) => ("archive verify", a.json, false),
        Command::Archive(ArchiveCommand::Import(a)) => ("archive import", a.json, false),
        Command::Archive(ArchiveCommand::Export(a)) => ("archive export", a.json, a.to == "-"),
        Command::Key(KeyCommand::Add(_)) => ("key add", false, false),
        Command::Key(KeyCommand::List(_)) => ("key list", false, false),
        Command::Key(KeyCommand::Remove(_)) => ("key remove", false, false),
        Command::Key(KeyCommand::Passwd(_)) => ("key passwd", false, false),
        Command::Files(c) => c.describe(),
    };
    events::set_command(command);
    if let Err(e) = events::init(cli.events.as_deref(), json, data_on_stdout) {
        note!("mover: {}; see `mover --help`", one_line(&e));
        return ExitCode::from(Exit::Usage as u8);
    }
    events::begin(command);
    let (code, message) = match run(&cli) {
        Ok(code) => (code, None),
        Err(e) => {
            if is_interrupted(&e) {
                let m = "interrupted; nothing was committed".to_string();
                note!("mover: {m}");
                (Exit::Interrupted, Some(m))
            } else if is_usage(&e) {
                let u = one_line(&e);
                note!("mover: {u}; see `mover --help`");
                (Exit::Usage, Some(u))
            } else {
                let m = one_line(&e);
                note!("mover: {m}");
                // Settings found unusable before anything was sent: a usage error.
                let misconfigured = e.chain().any(|c| {
                    c.downcast_ref()
                        .is_some_and(targets::Error::is_misconfigured)
                });
                let code = if misconfigured {
                    Exit::Usage
                } else {
                    Exit::Failure
                };
                (code, Some(m))
            }
        }
    };
    tracing::info!("mover finished with exit code {}", code as u8);
    if let Some(message) = message {
        events::error(command, &message, code as u8);
    }
    ExitCode::from(code as u8)
}

/// Help and version go to stdout with exit 0; every other parse error is one line on stderr
/// with exit 2, like every other error of mover.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let text = e.render().to_string();
    // The message is the first paragraph (clap lists missing arguments on lines of their own).
    let first: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let first = first.join(" ");
    let first = first.trim_start_matches("error: ");
    note!("mover: {first}; see `mover --help`");
    ExitCode::from(Exit::Usage as u8)
}

/// The error and its causes on one line (see [`mover::one_line`]).
fn one_line(e: &anyhow::Error) -> String {
    mover::one_line(e.as_ref())
}

/// Logs go to stderr at the level of -v/-q (or --log-level) and, with --log-file, also to
/// that file at info or more, with timestamps.
fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    use tracing::Level;
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let level = match (cli.log_level.as_deref(), cli.quiet, cli.verbose) {
        (Some("error"), ..) | (None, true, _) => Level::ERROR,
        (Some("warn"), ..) | (None, false, 0) => Level::WARN,
        (Some("info"), ..) | (None, false, 1) => Level::INFO,
        (Some("debug"), ..) | (None, false, 2) => Level::DEBUG,
        _ => Level::TRACE,
    };
    let Some(path) = &cli.log_file else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(level)
            .with_target(false)
            .without_time()
            .init();
        return Ok(());
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the log file {path}"))?;
    let file_level = level.max(Level::INFO);
    let file = std::sync::Arc::new(file);
    tracing_subscriber::fmt()
        .with_writer(
            std::io::stderr
                .with_max_level(level)
                .and(file.with_max_level(file_level)),
        )
        .with_max_level(file_level.max(level))
        .with_target(false)
        .with_ansi(false)
        .init();
    tracing::info!(
        "mover {} started: {}",
        env!("CARGO_PKG_VERSION"),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    Ok(())
}

fn run(cli: &Cli) -> anyhow::Result<Exit> {
    use cmd::{archive, backup, maintain, restore};
    let secrets =
        &Secrets::new(repo::profile_password_file(cli)?.or_else(|| cli.password_file.clone()));
    let quiet = cli.quiet;
    match &cli.command {
        Command::Init(a) => maintain::init(
            &a.repo,
            a.encrypt.then(|| a.cipher.unwrap_or_else(Aead::preferred)),
            maintain::lock_policy(a),
            secrets,
            quiet,
        ),
        Command::Key(c) => maintain::key(c, secrets, quiet),
        Command::Backup(a) => backup::backup(a, secrets, quiet),
        Command::Snapshots(a) => maintain::snapshots(a, secrets),
        Command::Restore(a) => restore::restore(a, secrets, quiet),
        Command::Serve(a) => cmd::serve::serve(a, secrets, quiet),
        Command::Verify(a) => maintain::verify(a, secrets, quiet),
        Command::Forget(a) => maintain::forget(a, secrets, quiet),
        Command::Gc(a) => maintain::gc(a, secrets, quiet),
        Command::Check(a) => maintain::check(a, secrets, quiet),
        Command::Repair(c) => maintain::repair(c, secrets, quiet),
        Command::Doctor(a) => cmd::doctor::doctor(a, secrets, quiet),
        Command::SupportBundle(a) => bundle::support_bundle(a, cli, secrets),
        Command::Benchmark(a) => maintain::benchmark(a),
        Command::Completions(a) => {
            use clap::CommandFactory;
            generate::completions(Cli::command(), a.shell, &mut std::io::stdout().lock())?;
            Ok(Exit::Success)
        }
        Command::Man => {
            use clap::CommandFactory;
            generate::man_page(Cli::command(), &mut std::io::stdout().lock())?;
            Ok(Exit::Success)
        }
        Command::Archive(c) => archive::archive(c, secrets, quiet),
        Command::Files(c) => cmd::files::files(c, secrets, quiet),
    }
}

/// A bad combination of arguments found after parsing: exit 2 like clap's own errors (the
/// library's [`mover::Error::Usage`] is one too).
fn usage(msg: impl Into<String>) -> anyhow::Error {
    mover::Error::Usage(msg.into()).into()
}

fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<mover::Error>()
            .is_some_and(mover::Error::is_usage)
    })
}

fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<mover::Error>()
            .is_some_and(mover::Error::is_interrupted)
    })
}

/// Parses the command line. `backup --profile NAME` first writes the profile's settings into
/// it, for the arguments that no flag or environment variable gives (flags > environment >
/// file; see `mover::config`).
fn parse_cli() -> anyhow::Result<Cli> {
    use clap::{CommandFactory, FromArgMatches};
    let argv = crate::config::with_profile(
        &Cli::command(),
        std::env::args_os().collect(),
        "backup",
        &|k| std::env::var_os(k),
    )?;
    Ok(Cli::from_arg_matches(
        &Cli::command().try_get_matches_from(argv)?,
    )?)
}

fn show_progress(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}
