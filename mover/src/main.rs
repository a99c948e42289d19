//! The `mover` binary: parse, run one command, map the outcome to an exit code.

mod cli;
mod output;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use mover::{Destination, FileSource, Progress, SourceKind};
use targets::{Backend, LocalBackend, Repository, RepositoryOptions, S3Backend, S3Options};

use cli::{BackupArgs, Cli, Command, PerfArgs, RepoArg, RestoreArgs, SnapshotsArgs, VerifyArgs};

/// Exit codes; see the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    Success = 0,
    Failure = 1,
    Usage = 2,
    #[allow(dead_code)] // used by commands that commit with recorded warnings
    Warnings = 3,
    Interrupted = 130,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    init_logging(cli.verbose, cli.quiet);
    mover::sys::install_signal_handlers();
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            let interrupted = e
                .chain()
                .any(|c| matches!(c.downcast_ref(), Some(mover::Error::Interrupted)));
            if interrupted {
                eprintln!("mover: interrupted; nothing was committed");
                Exit::Interrupted
            } else {
                eprintln!("mover: {}", one_line(&e));
                Exit::Failure
            }
        }
    };
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
    eprintln!("mover: {first}; see `mover --help`");
    ExitCode::from(Exit::Usage as u8)
}

/// The error and its causes on one line, skipping a cause whose text the message already
/// carries (many errors name their OS error themselves).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::filter::LevelFilter;
    let level = match (quiet, verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => LevelFilter::WARN,
        (false, 1) => LevelFilter::INFO,
        (false, 2) => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .init();
}

fn run(cli: &Cli) -> anyhow::Result<Exit> {
    match &cli.command {
        Command::Init(a) => init(&a.repo, cli.quiet),
        Command::Backup(a) => backup(a, cli.quiet),
        Command::Snapshots(a) => snapshots(a),
        Command::Restore(a) => restore(a, cli.quiet),
        Command::Verify(a) => verify(a, cli.quiet),
    }
}

fn is_s3(repo: &RepoArg) -> bool {
    repo.repo.starts_with("s3://")
}

fn backend(repo: &RepoArg) -> anyhow::Result<Arc<dyn Backend>> {
    if !is_s3(repo) {
        return Ok(Arc::new(LocalBackend::new(&repo.repo)));
    }
    Ok(Arc::new(s3_backend(repo)?))
}

fn s3_backend(repo: &RepoArg) -> anyhow::Result<S3Backend> {
    let opts = S3Options {
        endpoint: repo.s3_endpoint.clone(),
        region: repo.s3_region.clone(),
        virtual_hosted: repo.s3_virtual_hosted,
        allow_http: repo.s3_allow_http,
        retry_timeout: Some(std::time::Duration::from_secs(repo.s3_retry_timeout)),
    };
    let s3 = S3Backend::new(&repo.repo, &opts)?;
    s3.probe()?;
    Ok(s3)
}

fn repo_options(repo: &RepoArg) -> RepositoryOptions {
    if !is_s3(repo) {
        return RepositoryOptions::default();
    }
    // Uploads wait on the network: several smaller packs in flight, within the same memory
    // budget.
    let cache_dir = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .map(|c| c.join("mover"));
    RepositoryOptions {
        pack_size: 16 << 20,
        writers: usize::from(repo.connections).clamp(1, 6),
        cache_dir,
    }
}

fn open_repo(repo: &RepoArg) -> anyhow::Result<Repository> {
    let repo = Repository::open(backend(repo)?, repo_options(repo))?;
    for w in repo.warnings() {
        tracing::warn!("{w}");
    }
    Ok(repo)
}

fn threads(perf: &PerfArgs) -> usize {
    perf.threads
        .map_or_else(mover::default_threads, usize::from)
}

/// Workers for restore and verify: they wait on fetches, so on S3 one per connection.
fn fetch_threads(perf: &PerfArgs, repo: &RepoArg) -> usize {
    match perf.threads {
        Some(n) => usize::from(n),
        None if is_s3(repo) => usize::from(repo.connections),
        None => mover::default_threads(),
    }
}

fn init(repo: &RepoArg, quiet: bool) -> anyhow::Result<Exit> {
    if !is_s3(repo) {
        Repository::init(backend(repo)?)?;
        if !quiet {
            eprintln!("created repository {}", repo.repo);
        }
        return Ok(Exit::Success);
    }
    let s3 = Arc::new(s3_backend(repo)?);
    Repository::init(s3.clone())?;
    if !quiet {
        eprintln!("created repository {}", repo.repo);
        // Worth knowing about a server, though mover never relies on it (docs/FORMAT.md).
        match s3.honours_conditional_put() {
            Ok(true) => eprintln!("the server honours conditional writes (If-None-Match)"),
            Ok(false) => eprintln!(
                "note: the server ignores conditional writes (If-None-Match); mover does not \
                 depend on them, snapshot names are content hashes"
            ),
            Err(e) => tracing::warn!("could not probe conditional writes: {e}"),
        }
    }
    Ok(Exit::Success)
}

fn backup(a: &BackupArgs, quiet: bool) -> anyhow::Result<Exit> {
    let repo = open_repo(&a.repo)?;
    let stdin = a.source == "-";
    let opts = mover::BackupOptions {
        name: a.name.clone().unwrap_or_else(|| {
            if stdin {
                "stdin".into()
            } else {
                a.source.clone()
            }
        }),
        source_label: a.source.clone(),
        chunk_size: a.chunk_size,
        level: a.compression,
        threads: threads(&a.perf),
        memory: a.perf.memory,
    };
    let progress = Arc::new(Progress::default());
    let bar = output::ProgressBar::start(&progress, show_progress(quiet), "backup");
    let result = (|| -> anyhow::Result<mover::BackupReport> {
        if stdin {
            use std::os::fd::AsFd;
            let fd = std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .context("cannot read stdin")?;
            let stdin = std::fs::File::from(fd);
            return Ok(mover::backup_stream(&repo, stdin, &opts, &progress)?);
        }
        let source = FileSource::open(&a.source)?;
        Ok(match source.kind() {
            SourceKind::Stream => {
                mover::backup_stream(&repo, source.into_file(), &opts, &progress)?
            }
            _ => mover::backup_image(&repo, &source, &opts, &progress)?,
        })
    })();
    bar.finish();
    let report =
        result.with_context(|| format!("backup of {} failed, nothing was committed", a.source))?;
    output::backup_summary(&report, a.json, quiet)?;
    Ok(Exit::Success)
}

fn snapshots(a: &SnapshotsArgs) -> anyhow::Result<Exit> {
    let repo = open_repo(&a.repo)?;
    let list: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, m)| a.name.as_ref().is_none_or(|n| &m.name == n))
        .collect();
    output::snapshot_list(&list, a.json)?;
    Ok(Exit::Success)
}

fn restore(a: &RestoreArgs, quiet: bool) -> anyhow::Result<Exit> {
    let repo = open_repo(&a.repo)?;
    let (id, manifest) = repo.find_snapshot(&a.snapshot, a.name.as_deref())?;
    let dest = if a.to == "-" {
        Destination::Stdout
    } else {
        Destination::Path(a.to.clone().into())
    };
    let opts = mover::RestoreOptions {
        force: a.force,
        threads: fetch_threads(&a.perf, &a.repo),
        memory: a.perf.memory,
        sync: !a.no_sync,
    };
    let progress = Arc::new(Progress::default());
    let bar = output::ProgressBar::start(&progress, show_progress(quiet), "restore");
    let result = mover::restore(&repo, &manifest, &dest, &opts, &progress);
    bar.finish();
    let report =
        result.with_context(|| format!("restore of snapshot {} to {} failed", short(&id), a.to))?;
    output::restore_summary(&id, &report, a.json, quiet, dest == Destination::Stdout)?;
    Ok(Exit::Success)
}

fn verify(a: &VerifyArgs, quiet: bool) -> anyhow::Result<Exit> {
    let repo = open_repo(&a.repo)?;
    let selected = match &a.snapshot {
        Some(spec) => {
            let (id, m) = repo.find_snapshot(spec, a.name.as_deref())?;
            vec![(id, Ok(m))]
        }
        None => {
            let mut all = Vec::new();
            for id in repo.snapshot_ids()? {
                match repo.load_snapshot(&id) {
                    Ok(m) if a.name.as_ref().is_some_and(|n| &m.name != n) => {}
                    Ok(m) => all.push((id, Ok(m))),
                    Err(e) if e.is_damage() => all.push((id, Err(e.to_string()))),
                    Err(e) => return Err(e.into()),
                }
            }
            all
        }
    };
    let progress = Arc::new(Progress::default());
    let bar = output::ProgressBar::start(&progress, show_progress(quiet), "verify");
    let result = mover::verify(&repo, selected, fetch_threads(&a.perf, &a.repo), &progress);
    bar.finish();
    let report = result.context("verify could not finish")?;
    output::verify_report(&report, a.json, quiet)?;
    let damaged = report.snapshots.iter().filter(|s| !s.is_ok()).count();
    if damaged > 0 {
        eprintln!(
            "mover: {damaged} of {} snapshots are damaged; they cannot be restored bit-exact",
            report.snapshots.len()
        );
        return Ok(Exit::Failure);
    }
    Ok(Exit::Success)
}

fn show_progress(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

fn short(id: &chunker::format::ObjectId) -> String {
    id.to_hex()[..12].to_string()
}
