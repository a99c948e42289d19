//! The `mover` binary: parse, run one command, map the outcome to an exit code.

mod bundle;
mod cli;
mod events;
mod generate;
mod output;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use mover::{Destination, FileSource, Progress, SourceKind};
use targets::{Backend, LocalBackend, Repository, RepositoryOptions, S3Backend, S3Options};

use chunker::crypto::{Aead, Password};
use cli::{
    ArchiveCommand, ArchiveFormat, BackupArgs, Cli, Command, DoctorArgs, KeyCommand, PerfArgs,
    RepairCommand, RepoArg, RestoreArgs, SnapshotsArgs, Subset, VerifyArgs,
};

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
                eprintln!("mover: {}; see `mover --help`", one_line(&e));
                return ExitCode::from(Exit::Usage as u8);
            }
        },
    };
    if let Err(e) = init_logging(&cli) {
        eprintln!("mover: {}; see `mover --help`", one_line(&e));
        return ExitCode::from(Exit::Usage as u8);
    }
    mover::sys::install_signal_handlers();
    mover::sys::keep_freed_buffers();
    let (command, json, data_on_stdout) = match &cli.command {
        Command::Init(_) => ("init", false, false),
        Command::Backup(a) => (
            "backup",
            a.json,
            a.archive.to_archive.as_deref() == Some("-"),
        ),
        Command::Snapshots(_) => ("snapshots", false, false),
        Command::Restore(a) => ("restore", a.json, a.to == "-"),
        Command::Verify(a) => ("verify", a.json, false),
        Command::Forget(a) => ("forget", a.json, false),
        Command::Gc(a) => ("gc", a.json, false),
        Command::Check(a) => ("check", a.json, false),
        Command::Repair(RepairCommand::Index(a)) => ("repair index", a.json, false),
        Command::Repair(RepairCommand::Snapshots(a)) => ("repair snapshots", a.json, false),
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
    };
    if let Err(e) = events::init(cli.events.as_deref(), json, data_on_stdout) {
        eprintln!("mover: {}; see `mover --help`", one_line(&e));
        return ExitCode::from(Exit::Usage as u8);
    }
    events::emit(
        "begin",
        serde_json::json!({"command": command, "version": env!("CARGO_PKG_VERSION"),
                           "pid": std::process::id()}),
    );
    let (code, message) = match run(&cli) {
        Ok(code) => (code, None),
        Err(e) => {
            if is_interrupted(&e) {
                let m = "interrupted; nothing was committed".to_string();
                eprintln!("mover: {m}");
                (Exit::Interrupted, Some(m))
            } else if let Some(u) = e.downcast_ref::<UsageError>() {
                eprintln!("mover: {u}; see `mover --help`");
                (Exit::Usage, Some(u.to_string()))
            } else {
                let m = one_line(&e);
                eprintln!("mover: {m}");
                (Exit::Failure, Some(m))
            }
        }
    };
    tracing::info!("mover finished with exit code {}", code as u8);
    if let Some(message) = message {
        events::emit(
            "error",
            serde_json::json!({"command": command, "message": message, "exit_code": code as u8}),
        );
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
    PASSWORD_FILE
        .set(profile_password_file(cli)?.or_else(|| cli.password_file.clone()))
        .expect("set once, before any command runs");
    match &cli.command {
        Command::Init(a) => init(
            &a.repo,
            a.encrypt.then(|| a.cipher.unwrap_or_else(Aead::preferred)),
            cli.quiet,
        ),
        Command::Key(c) => key_cmd(c, cli.quiet),
        Command::Backup(a) => backup(a, cli.quiet),
        Command::Snapshots(a) => snapshots(a),
        Command::Restore(a) => restore(a, cli.quiet),
        Command::Verify(a) => verify(a, cli.quiet),
        Command::Forget(a) => forget(a),
        Command::Gc(a) => gc(a),
        Command::Check(a) => check(a),
        Command::Repair(c) => repair(c),
        Command::Doctor(a) => doctor(a),
        Command::SupportBundle(a) => support_bundle(a, cli),
        Command::Benchmark(a) => benchmark(a),
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
        Command::Archive(c) => archive_cmd(c, cli.quiet),
    }
}

fn is_s3(repo: &RepoArg) -> bool {
    repo.repo.starts_with("s3://")
}

fn backend(repo: &RepoArg) -> anyhow::Result<Arc<dyn Backend>> {
    if repo.repo.is_empty() {
        return Err(usage(
            "no repository given; pass -r/--repo DIR|s3://BUCKET/PREFIX or set MOVER_REPO (or write an archive with --to-archive)",
        ));
    }
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
        password: None,
    }
}

/// `--password-file`, taken from the command line once.
static PASSWORD_FILE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
/// The password, once read (from the file, the environment or a prompt).
static PASSWORD: std::sync::Mutex<Option<Password>> = std::sync::Mutex::new(None);

/// `backup --profile NAME`: the `password_file` of the profile's repository, when neither
/// `--password-file` nor `MOVER_PASSWORD` gives a password (flags > environment > file).
fn profile_password_file(cli: &Cli) -> anyhow::Result<Option<std::path::PathBuf>> {
    let Command::Backup(BackupArgs {
        profile: Some(name),
        ..
    }) = &cli.command
    else {
        return Ok(None);
    };
    if cli.password_file.is_some()
        || std::env::var_os("MOVER_PASSWORD").is_some_and(|v| !v.is_empty())
    {
        return Ok(None);
    }
    let config = mover::config::Config::load(cli.config.as_deref())?;
    let profile = config.profile(name)?;
    Ok(profile.repository.and_then(|(_, r)| r.password_file))
}

/// The first line of a password file.
fn read_password_file(path: &std::path::Path) -> anyhow::Result<Password> {
    let mut bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    if let Some(end) = bytes.iter().position(|&b| b == b'\n') {
        bytes.truncate(end);
    }
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(usage(format!(
            "the password file {} is empty",
            path.display()
        )));
    }
    Ok(Password::new(bytes))
}

/// Reads a secret from `file`, else the environment variable `var`; `None` when neither is
/// given.
fn secret(file: Option<&std::path::Path>, var: &str) -> anyhow::Result<Option<Password>> {
    if let Some(path) = file {
        return Ok(Some(read_password_file(path)?));
    }
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => {
            use std::os::unix::ffi::OsStringExt;
            Ok(Some(Password::new(v.into_vec())))
        }
        _ => Ok(None),
    }
}

/// The password given (`--password-file`, then `MOVER_PASSWORD`), if any.
fn password() -> anyhow::Result<Option<Password>> {
    let mut cached = PASSWORD.lock().expect("password lock");
    if cached.is_none() {
        let file = PASSWORD_FILE.get().and_then(|f| f.as_deref());
        *cached = secret(file, "MOVER_PASSWORD")?;
    }
    Ok(cached.clone())
}

/// Asks for a password on the terminal; `None` when stdin is not a terminal (backup software
/// never gets a prompt).
fn prompt(question: &str) -> anyhow::Result<Option<Password>> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    eprint!("{question}: ");
    let line = mover::sys::read_line_without_echo().context("cannot read the password")?;
    if line.is_empty() {
        return Err(usage("no password entered"));
    }
    Ok(Some(Password::new(line)))
}

fn open_repo(repo: &RepoArg) -> anyhow::Result<Repository> {
    let mut options = repo_options(repo);
    options.password = password()?;
    let opened = match Repository::open(backend(repo)?, options.clone()) {
        Err(targets::Error::PasswordRequired { location }) => {
            let Some(p) = prompt(&format!("password of {location}"))? else {
                return Err(targets::Error::PasswordRequired { location }.into());
            };
            *PASSWORD.lock().expect("password lock") = Some(p.clone());
            options.password = Some(p);
            Repository::open(backend(repo)?, options)?
        }
        other => other?,
    };
    for w in opened.warnings() {
        tracing::warn!("{w}");
    }
    Ok(opened)
}

/// The password for something new (an encrypted repository or archive): given, or asked
/// twice on a terminal.
fn password_for_new(what: &str) -> anyhow::Result<Password> {
    if let Some(p) = password()? {
        return Ok(p);
    }
    new_secret(None, "MOVER_PASSWORD", what)
}

fn new_secret(file: Option<&std::path::Path>, var: &str, what: &str) -> anyhow::Result<Password> {
    if let Some(p) = secret(file, var)? {
        return Ok(p);
    }
    let Some(first) = prompt(&format!("password for {what}"))? else {
        return Err(usage(format!(
            "{what} needs a password: set {var} or give {} (no prompt: stdin is not a terminal)",
            if var == "MOVER_PASSWORD" {
                "--password-file FILE"
            } else {
                "--new-password-file FILE"
            }
        )));
    };
    let again = prompt("again")?.unwrap_or_else(|| Password::new(Vec::new()));
    if again.as_bytes() != first.as_bytes() {
        return Err(usage("the two passwords differ"));
    }
    Ok(first)
}

fn key_cmd(cmd: &KeyCommand, quiet: bool) -> anyhow::Result<Exit> {
    let params = chunker::crypto::KdfParams::default();
    let new_password = |a: &cli::KeyNewArgs| {
        new_secret(
            a.new_password_file.as_deref(),
            "MOVER_NEW_PASSWORD",
            "the new key",
        )
    };
    match cmd {
        KeyCommand::Add(a) => {
            let repo = open_repo(&a.repo)?;
            let new = new_password(a)?;
            let id = repo.add_key(&new, params)?;
            if !quiet {
                eprintln!("added key {}", &id[..12]);
            }
            println!("{id}");
        }
        KeyCommand::Passwd(a) => {
            let repo = open_repo(&a.repo)?;
            let new = new_password(a)?;
            let id = repo.change_password(&new, params)?;
            if !quiet {
                eprintln!(
                    "password changed: key {} replaces the one in use",
                    &id[..12]
                );
            }
            println!("{id}");
        }
        KeyCommand::Remove(a) => {
            let repo = open_repo(&a.repo)?;
            let id = repo.remove_key(&a.id)?;
            if !quiet {
                eprintln!("removed key {}", &id[..12]);
            }
        }
        KeyCommand::List(a) => {
            let repo = open_repo(&a.repo)?;
            output::key_list(&repo.list_keys()?, a.json)?;
        }
    }
    Ok(Exit::Success)
}

fn threads(perf: &PerfArgs) -> usize {
    perf.threads
        .map_or_else(mover::default_threads, usize::from)
}

/// Workers for verify: they wait on fetches, so on S3 one per connection.
fn fetch_threads(perf: &PerfArgs, repo: &RepoArg) -> usize {
    match perf.threads {
        Some(n) => usize::from(n),
        None if is_s3(repo) => usize::from(repo.connections),
        None => mover::default_threads(),
    }
}

/// Workers for restore. On S3 each holds one ranged read of up to
/// [`mover::REMOTE_TASK_BYTES`] of chunks: one per connection, but no more than half the
/// memory budget holds at that size, since a few large reads cost the server far less than
/// many small ones (it reads whole blocks at both ends of each).
fn restore_threads(perf: &PerfArgs, repo: &RepoArg) -> usize {
    match perf.threads {
        None if is_s3(repo) => {
            let by_memory = perf.memory / 2 / mover::REMOTE_TASK_BYTES;
            usize::from(repo.connections).min(by_memory.max(2) as usize)
        }
        _ => fetch_threads(perf, repo),
    }
}

fn init(repo: &RepoArg, encrypt: Option<Aead>, quiet: bool) -> anyhow::Result<Exit> {
    let key = match encrypt {
        Some(aead) => Some((password_for_new("the new repository")?, aead)),
        None => None,
    };
    let create = |b: Arc<dyn Backend>| -> anyhow::Result<()> {
        match &key {
            Some((p, aead)) => {
                Repository::init_encrypted(b, p, chunker::crypto::KdfParams::default(), *aead)?
            }
            None => Repository::init(b)?,
        };
        Ok(())
    };
    let what = match encrypt {
        Some(aead) => format!("repository encrypted with {}", aead.name()),
        None => "repository".to_string(),
    };
    if !is_s3(repo) {
        create(backend(repo)?)?;
        if !quiet {
            eprintln!("created {what} {}", repo.repo);
        }
        return Ok(Exit::Success);
    }
    let s3 = Arc::new(s3_backend(repo)?);
    create(s3.clone())?;
    if !quiet {
        eprintln!("created {what} {}", repo.repo);
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

/// `e` as the failure of `what`, saying that `nothing` was committed unless the commit's
/// outcome is unknown (then that claim may be false).
fn failed_uncommitted(e: anyhow::Error, what: &str, nothing: &str) -> anyhow::Error {
    let unknown = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<targets::Error>(),
            Some(targets::Error::CommitUnknown { .. })
        ) || matches!(
            c.downcast_ref::<mover::Error>(),
            Some(mover::Error::Store(targets::Error::CommitUnknown { .. }))
        )
    });
    if unknown {
        e.context(format!("{what} failed"))
    } else {
        e.context(format!("{what} failed, {nothing}"))
    }
}

/// A bad combination of arguments found after parsing: exit 2 like clap's own errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

fn is_nbd(src: &str) -> bool {
    src.starts_with("nbd://") || src.starts_with("nbd+unix://")
}

/// Splits `--source` values into (disk name, source). `NAME=SRC` names a disk; a single
/// unnamed source is named after the snapshot.
fn disk_specs(a: &BackupArgs, group: &str) -> anyhow::Result<Vec<(String, String)>> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    let mut specs = Vec::new();
    for s in &a.source {
        let named = s
            .split_once('=')
            .filter(|(n, src)| valid_name(n) && !src.is_empty());
        specs.push(match named {
            Some((n, src)) => (Some(n.to_string()), src.to_string()),
            None => (None, s.clone()),
        });
    }
    if specs.len() == 1 {
        let (name, src) = specs.pop().expect("one");
        return Ok(vec![(name.unwrap_or_else(|| group.to_string()), src)]);
    }
    let mut out = Vec::new();
    for (name, src) in specs {
        let Some(name) = name else {
            return Err(usage(format!(
                "--source {src}: name each disk of a multi-disk backup, as --source NAME={src}"
            )));
        };
        if out.iter().any(|(n, _)| n == &name) {
            return Err(usage(format!(
                "disk name {name} is given twice; names must be unique"
            )));
        }
        out.push((name, src));
    }
    if out.iter().filter(|(_, s)| s == "-").count() > 1 {
        return Err(usage("only one disk can come from stdin (-)"));
    }
    Ok(out)
}

/// An opened source of one disk.
enum Opened {
    Image(FileSource),
    Nbd(mover::NbdSource),
    Stream(std::fs::File),
}

fn open_disk(src: &str, bitmap: Option<&str>) -> anyhow::Result<Opened> {
    if is_nbd(src) {
        let opts = mover::NbdOptions {
            bitmap: bitmap.map(str::to_string),
            ..Default::default()
        };
        return Ok(Opened::Nbd(mover::NbdSource::connect(src, &opts)?));
    }
    if src == "-" {
        use std::os::fd::AsFd;
        let fd = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("cannot read stdin")?;
        return Ok(Opened::Stream(std::fs::File::from(fd)));
    }
    let source = FileSource::open(src)?;
    Ok(match source.kind() {
        SourceKind::Stream => Opened::Stream(source.into_file()),
        _ => Opened::Image(source),
    })
}

/// Reads `--changed-extents` values into per-disk change lists (by disk name).
fn changed_extents(
    a: &BackupArgs,
    disks: &[(String, String)],
) -> anyhow::Result<std::collections::HashMap<String, (String, String)>> {
    let mut out = std::collections::HashMap::new();
    for v in &a.changed_extents {
        let (disk, file) = match v.split_once('=') {
            Some((d, f)) if disks.iter().any(|(n, _)| n == d) => (d.to_string(), f.to_string()),
            _ if disks.len() == 1 => (disks[0].0.clone(), v.clone()),
            _ => {
                return Err(usage(format!(
                    "--changed-extents {v}: say which disk, as --changed-extents NAME=FILE"
                )))
            }
        };
        let text = read_text(&file, "changed-extent list")?;
        if out.insert(disk.clone(), (file, text)).is_some() {
            return Err(usage(format!(
                "--changed-extents is given twice for disk {disk}"
            )));
        }
    }
    Ok(out)
}

fn attachments(a: &BackupArgs) -> anyhow::Result<Vec<chunker::format::Attachment>> {
    let mut out: Vec<chunker::format::Attachment> = Vec::new();
    for path in &a.attach {
        let p = std::path::Path::new(path);
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| usage(format!("--attach {path}: not a file name")))?;
        let len = std::fs::metadata(p)
            .with_context(|| format!("cannot read attachment {path}"))?
            .len();
        if len > chunker::format::MAX_ATTACHMENT as u64 {
            return Err(usage(format!(
                "--attach {path}: {len} bytes is too large for an attachment (at most 16 MiB); back it up as a disk"
            )));
        }
        if out.iter().any(|x| x.name == name) {
            return Err(usage(format!("--attach: two attachments are named {name}")));
        }
        let data = std::fs::read(p).with_context(|| format!("cannot read attachment {path}"))?;
        out.push(chunker::format::Attachment { name, data });
    }
    Ok(out)
}

/// Finds the parent snapshot; a missing one means a full backup with a warning.
fn find_parent(
    repo: &Repository,
    spec: &str,
    group: &str,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Option<(chunker::format::ObjectId, chunker::format::Manifest)>> {
    match repo.find_snapshot(spec, (spec.eq_ignore_ascii_case("latest")).then_some(group)) {
        Ok(found) => Ok(Some(found)),
        Err(targets::Error::NotFound { what }) => {
            warnings.push(format!(
                "{what} not found; this backup reads everything (a full backup)"
            ));
            Ok(None)
        }
        Err(e) if e.is_damage() => {
            warnings.push(format!(
                "parent {spec} cannot be read ({e}); this backup reads everything"
            ));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn backup(a: &BackupArgs, quiet: bool) -> anyhow::Result<Exit> {
    let group = match (&a.name, a.source.as_slice()) {
        (Some(n), _) => n.clone(),
        (None, [one]) if one == "-" => "stdin".into(),
        (None, [one]) => one.clone(),
        (None, _) => return Err(usage("a multi-disk backup needs --name for the snapshot")),
    };
    let specs = disk_specs(a, &group)?;
    if a.bitmap.is_some() && !specs.iter().any(|(_, s)| is_nbd(s)) {
        return Err(usage(
            "--bitmap needs an NBD source (nbd:// or nbd+unix://); use --changed-extents for files and devices",
        ));
    }
    let change_lists = changed_extents(a, &specs)?;
    if a.bitmap.is_some() {
        if let Some((name, _)) = specs
            .iter()
            .find(|(n, s)| is_nbd(s) && change_lists.contains_key(n))
        {
            return Err(usage(format!(
                "disk {name} has both --bitmap and --changed-extents; give one change map per disk"
            )));
        }
    }
    let attachments = attachments(a)?;
    let label = specs
        .iter()
        .map(|(_, s)| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let hook = |name, cmd: &Option<String>| {
        cmd.as_ref().map(|c| mover::Hook {
            name,
            command: c.clone(),
            timeout: std::time::Duration::from_secs(a.hook_timeout),
        })
    };
    let hooks = [
        hook("pre-snapshot", &a.pre_snapshot),
        hook("post-snapshot", &a.post_snapshot),
        hook("post-backup", &a.post_backup),
    ];
    let env = vec![
        ("MOVER_SOURCE", label.clone()),
        ("MOVER_NAME", group.clone()),
        ("MOVER_REPO", a.repo.repo.clone()),
    ];
    let job = BackupJob {
        a,
        quiet,
        group,
        specs,
        change_lists,
        attachments,
        label,
        hooks: &hooks,
        env: &env,
    };
    let mut outcome = job.run();
    if let Some(post) = &hooks[2] {
        // The post-backup hook runs with the outcome, whatever it is; its failure is one
        // more warning of a committed backup.
        let mut env = env.clone();
        let (status, code) = match &outcome {
            Ok((r, _)) if r.warnings.is_empty() => ("success", Exit::Success),
            Ok(_) => ("warnings", Exit::Warnings),
            Err(e) if is_interrupted(e) => ("interrupted", Exit::Interrupted),
            Err(e) if e.is::<UsageError>() => ("usage-error", Exit::Usage),
            Err(e) => {
                env.push(("MOVER_ERROR", one_line(e)));
                ("failed", Exit::Failure)
            }
        };
        env.push(("MOVER_STATUS", status.into()));
        env.push(("MOVER_EXIT_CODE", (code as u8).to_string()));
        if let Ok((r, _)) = &outcome {
            let s = &r.manifest.stats;
            env.push(("MOVER_SNAPSHOT_ID", r.snapshot.to_hex()));
            env.push(("MOVER_SOURCE_BYTES", r.manifest.total_len().to_string()));
            env.push(("MOVER_BYTES_READ", s.bytes_read.to_string()));
            env.push(("MOVER_BYTES_NEW", s.bytes_new.to_string()));
            env.push(("MOVER_BYTES_STORED", s.bytes_stored.to_string()));
        }
        if let Err(e) = post.run(&env) {
            match &mut outcome {
                Ok((r, _)) => r.warnings.push(e.to_string()),
                Err(_) => eprintln!("mover: warning: {e}"),
            }
        }
    }
    let (report, extra) = outcome?;
    for w in &report.warnings {
        eprintln!("mover: warning: {w}");
        events::emit("warning", serde_json::json!({"message": w}));
    }
    let data_on_stdout = a.archive.to_archive.as_deref() == Some("-");
    let summary = output::backup_summary(&report, extra, a.json, quiet, data_on_stdout)?;
    if let Some(path) = &a.catalog_out {
        // The run's catalog entry, for the backup software's own catalog: the summary event's
        // data, as one JSON document (written atomically).
        let doc =
            serde_json::json!({"type": "catalog", "schema": output::JSON_SCHEMA, "data": summary});
        if let Err(e) = write_atomically(std::path::Path::new(path), doc.to_string().as_bytes()) {
            let m = format!(
                "the snapshot is committed, but --catalog-out {path} cannot be written: {e}"
            );
            eprintln!("mover: warning: {m}");
            events::emit("warning", serde_json::json!({"message": m}));
            return Ok(Exit::Warnings);
        }
    }
    Ok(if report.warnings.is_empty() {
        Exit::Success
    } else {
        Exit::Warnings
    })
}

fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| matches!(c.downcast_ref(), Some(mover::Error::Interrupted)))
}

/// A validated backup, ready to run between its hooks.
struct BackupJob<'a> {
    a: &'a BackupArgs,
    quiet: bool,
    group: String,
    specs: Vec<(String, String)>,
    /// Per disk: the changed-extent list's file name and text.
    change_lists: std::collections::HashMap<String, (String, String)>,
    attachments: Vec<chunker::format::Attachment>,
    label: String,
    /// pre-snapshot, post-snapshot, post-backup.
    hooks: &'a [Option<mover::Hook>; 3],
    env: &'a [(&'static str, String)],
}

impl BackupJob<'_> {
    fn run(mut self) -> anyhow::Result<(mover::BackupReport, Option<serde_json::Value>)> {
        let a = self.a;
        let mut warnings = Vec::new();
        let mut chain_key = None;
        let (repo, parent, catalog) = match &a.archive.to_archive {
            None => {
                if a.archive.format.encrypt {
                    return Err(usage(
                        "--encrypt applies to --to-archive; a repository is encrypted when it is created (mover init --encrypt)",
                    ));
                }
                let repo = open_repo(&a.repo)?;
                let parent = match &a.parent {
                    Some(spec) => find_parent(&repo, spec, &self.group, &mut warnings)?,
                    None => None,
                };
                (Some(repo), parent, None)
            }
            Some(_) => {
                let catalog = match &a.catalog {
                    Some(c) => {
                        let path = std::path::PathBuf::from(c);
                        let loaded = mover::archive::Catalog::load(&path)?;
                        Some((path, loaded))
                    }
                    None => None,
                };
                if let (Some(_), Some((path, c))) = (&a.parent, &catalog) {
                    if !c.chain.is_empty() {
                        // An incremental of an encrypted chain uses the chain's key.
                        chain_key = c.chain_key(path, password()?.as_ref())?;
                    }
                }
                let parent = match (&a.parent, &catalog) {
                    (None, _) => None,
                    (Some(spec), Some((path, c))) if spec.eq_ignore_ascii_case("latest") => {
                        let p = c.parent(path, chain_key.as_ref())?;
                        if p.is_none() {
                            warnings.push(format!(
                                "catalog {} holds no archive yet; this archive is a full one",
                                path.display()
                            ));
                        }
                        p
                    }
                    (Some(_), Some(_)) => return Err(usage(
                        "with --to-archive, --parent takes latest: the last archive of --catalog",
                    )),
                    (Some(_), None) => return Err(usage(
                        "--parent with --to-archive needs --catalog FILE (the chain of archives)",
                    )),
                };
                (None, parent, catalog)
            }
        };
        let label = self.label.clone();
        let failed = |e: anyhow::Error| {
            failed_uncommitted(e, &format!("backup of {label}"), "nothing was committed")
        };
        // The snapshot point: the pre-snapshot hook (freeze, take the snapshot), then the
        // sources are opened and their change maps read, then the post-snapshot hook (thaw),
        // which runs whenever the pre hook ran.
        if let Some(pre) = &self.hooks[0] {
            if let Err(e) = pre.run(self.env) {
                self.post_snapshot(false, &mut warnings);
                return Err(failed(e.into()));
            }
        }
        let opened = self.open_sources(parent.is_some());
        self.post_snapshot(opened.is_ok(), &mut warnings);
        let (mut opened, mut changes) = opened.map_err(|e| match e.is::<UsageError>() {
            true => e,
            false => failed(e),
        })?;
        let disks: Vec<(String, u64)> = self
            .specs
            .iter()
            .zip(&opened)
            .map(|((name, _), o)| {
                let len = match o {
                    Opened::Image(f) => mover::Source::len(f),
                    Opened::Nbd(n) => mover::Source::len(n),
                    Opened::Stream(_) => 0,
                };
                (name.clone(), len)
            })
            .collect();
        let mut jobs = Vec::with_capacity(self.specs.len());
        for ((name, src), disk) in self.specs.iter().zip(opened.iter_mut()) {
            let input = match disk {
                Opened::Image(f) => mover::DiskInput::Image(f),
                Opened::Nbd(n) => mover::DiskInput::Image(n),
                Opened::Stream(f) => {
                    let f = f.try_clone().context("cannot read the stream")?;
                    mover::DiskInput::Stream(Box::new(f))
                }
            };
            jobs.push(mover::DiskJob {
                name: name.clone(),
                label: src.clone(),
                input,
                changes: changes.remove(0),
                change_token: a
                    .change_id
                    .clone()
                    .or_else(|| a.bitmap.clone())
                    .unwrap_or_default(),
            });
        }
        let incremental = parent.is_some();
        let opts = mover::BackupOptions {
            name: self.group.clone(),
            chunk_size: a.chunk_size,
            level: a.compression,
            threads: threads(&a.perf),
            memory: a.perf.memory,
            parent,
            verify_changes: a.verify_changes,
            attachments: std::mem::take(&mut self.attachments),
        };
        let progress = Arc::new(Progress::default());
        let mut extra = None;
        let report = match (&repo, &a.archive.to_archive) {
            (Some(repo), _) => {
                let bar =
                    output::ProgressBar::start(&progress, show_progress(self.quiet), "backup");
                let result = mover::backup(repo, jobs, &opts, &progress);
                bar.finish();
                result.map_err(|e| failed(e.into()))?
            }
            (None, Some(path)) => {
                let key = match chain_key {
                    Some(k) if a.archive.format.cipher.is_some_and(|c| c != k.keys.aead()) => {
                        return Err(usage(format!(
                            "the archive chain of --catalog is encrypted with {}; an incremental uses its chain's cipher: leave out --cipher, or start a new chain with a full archive (no --parent)",
                            k.keys.aead().name()
                        )))
                    }
                    Some(k) => Some(k),
                    None if incremental && a.archive.format.encrypt => {
                        return Err(usage(
                            "the archive chain of --catalog is not encrypted; an incremental uses its chain's key: start a new, encrypted chain with a full archive (no --parent)",
                        ))
                    }
                    None if a.archive.format.encrypt => Some(targets::archive::ArchiveKey::new(
                        &password_for_new("the archive")?,
                        chunker::crypto::KdfParams::default(),
                        a.archive.format.cipher.unwrap_or_else(Aead::preferred),
                    )?),
                    None => None,
                };
                let (known, parents) = match (&catalog, incremental) {
                    (Some((p, c)), true) => (c.chunks(p)?, c.ids()),
                    _ => (Vec::new(), Vec::new()),
                };
                let parent_ids: Vec<String> = parents.iter().map(|p| p.to_hex()).collect();
                let header = mover::archive::header_for(&disks, a.chunk_size, parents, &self.group);
                let created = archive_created(path, &a.archive.format);
                let result = (|| -> anyhow::Result<_> {
                    let (sink, _) = open_archive_sink(path, &a.archive.format)?;
                    let target = mover::archive::ArchiveTarget::new(
                        sink,
                        &archive_options(&a.archive.format),
                        header,
                        known,
                        key.clone(),
                    )?;
                    let bar =
                        output::ProgressBar::start(&progress, show_progress(self.quiet), "backup");
                    let result = mover::backup(&target, jobs, &opts, &progress);
                    bar.finish();
                    let report = result?;
                    let (summary, written) = target.finished().expect("a committed archive");
                    Ok((report, summary, written))
                })();
                let (report, summary, written) = match result {
                    Ok(r) => r,
                    Err(e) => {
                        remove_archive(path, created);
                        return Err(failed(e));
                    }
                };
                if let Some((path, mut c)) = catalog {
                    let entry = mover::archive::CatalogArchive {
                        id: summary.id.to_hex(),
                        created_ms: report.manifest.created_ms,
                        chunks: written.iter().map(|id| id.to_hex()).collect(),
                    };
                    if !incremental {
                        c.chain.clear();
                    }
                    c.version = 1;
                    c.chain.push(entry);
                    c.set_manifest(&report.manifest, key.as_ref());
                    c.save(&path)?;
                }
                extra = Some(serde_json::json!({
                    "archive": {
                        "id": summary.id.to_hex(),
                        "volumes": summary.volumes,
                        "bytes_written": summary.bytes_written,
                        "chunks": summary.chunks,
                        "stored_bytes": summary.stored_bytes,
                        "parents": parent_ids,
                    }
                }));
                report
            }
            (None, None) => unreachable!("a backup goes to a repository or an archive"),
        };
        let mut report = report;
        warnings.append(&mut report.warnings);
        report.warnings = warnings;
        Ok((report, extra))
    }

    /// Runs the post-snapshot hook, if any; its failure is a warning (the data was read).
    fn post_snapshot(&self, ok: bool, warnings: &mut Vec<String>) {
        if let Some(post) = &self.hooks[1] {
            let mut env = self.env.to_vec();
            env.push(("MOVER_STATUS", if ok { "ok" } else { "failed" }.into()));
            if let Err(e) = post.run(&env) {
                warnings.push(e.to_string());
            }
        }
    }

    /// Opens every source and reads its change map.
    fn open_sources(
        &mut self,
        has_parent: bool,
    ) -> anyhow::Result<(Vec<Opened>, Vec<mover::ChangeMap>)> {
        let a = self.a;
        let mut opened = Vec::with_capacity(self.specs.len());
        let mut changes = Vec::with_capacity(self.specs.len());
        for (name, src) in &self.specs {
            // Without a parent a bitmap has nothing to be relative to: do not ask for it. In a
            // group, the bitmap applies to the NBD disks; the others use their change list or
            // compare mode.
            let bitmap = a.bitmap.as_deref().filter(|_| has_parent && is_nbd(src));
            let disk = open_disk(src, bitmap)?;
            let mut change = mover::ChangeMap::Unknown;
            if let (Opened::Nbd(n), Some(_)) = (&disk, bitmap) {
                change = mover::ChangeMap::Changed(n.dirty_extents()?);
            }
            if let Some((file, text)) = self.change_lists.remove(name) {
                let len = match &disk {
                    Opened::Image(f) => mover::Source::len(f),
                    Opened::Nbd(n) => mover::Source::len(n),
                    Opened::Stream(_) => {
                        return Err(usage(format!(
                            "--changed-extents cannot apply to {src}, a stream; it needs an image, device or NBD source"
                        )))
                    }
                };
                if has_parent {
                    change = mover::ChangeMap::Changed(mover::parse_disk_change_info(
                        &text, len, &file,
                    )?);
                }
            }
            opened.push(disk);
            changes.push(change);
        }
        Ok((opened, changes))
    }
}

/// Writes `data` to `path` through a temporary file, fsync and rename.
fn write_atomically(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".mover-{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn archive_options(f: &ArchiveFormat) -> targets::archive::ArchiveOptions {
    targets::archive::ArchiveOptions {
        block_size: f.block_size,
        volume_size: f.volume_size,
    }
}

/// Whether writing the archive creates files that a failure must remove.
fn archive_created(path: &str, f: &ArchiveFormat) -> bool {
    path != "-"
        && std::fs::metadata(path).map_or(true, |m| m.is_file())
        && (f.volume_size.is_some() || f.force || std::fs::metadata(path).is_err())
}

fn open_archive_sink(
    path: &str,
    f: &ArchiveFormat,
) -> anyhow::Result<(
    Box<dyn targets::archive::VolumeSink + Send>,
    Option<std::path::PathBuf>,
)> {
    let hook = f.next_volume.as_ref().map(|c| mover::Hook {
        name: "next-volume",
        command: c.clone(),
        timeout: std::time::Duration::from_secs(24 * 3600),
    });
    Ok(mover::archive::open_sink(
        path,
        f.volume_size,
        hook,
        f.force,
    )?)
}

/// Removes what a failed archive left: the file, or its volume files.
fn remove_archive(path: &str, created: bool) {
    if !created {
        return;
    }
    let _ = std::fs::remove_file(path);
    for n in 0.. {
        let v = targets::archive::FileVolumes::volume_path(std::path::Path::new(path), n);
        if std::fs::remove_file(v).is_err() {
            break;
        }
    }
}

fn restore_from_archive(a: &RestoreArgs, quiet: bool) -> anyhow::Result<Exit> {
    let inputs = a
        .from_archive
        .iter()
        .map(|p| mover::archive::open_input(p))
        .collect::<Result<Vec<_>, _>>()?;
    if a.from_archive.iter().filter(|p| *p == "-").count() > 1 {
        return Err(usage("only one --from-archive can be stdin (-)"));
    }
    let dest = if a.to == "-" {
        Destination::Stdout
    } else {
        Destination::Path(a.to.clone().into())
    };
    let opts = mover::archive::ArchiveRestoreOptions {
        password: password()?,
        disk: a.disk.clone(),
        strict: a.strict,
        force: a.force,
        sync: !a.no_sync,
    };
    let progress = Arc::new(Progress::default());
    let bar = output::ProgressBar::start(&progress, show_progress(quiet), "restore");
    let start = std::time::Instant::now();
    let result = mover::archive::restore_archive(inputs, &dest, &opts, &progress);
    bar.finish();
    let report = result.with_context(|| format!("restore from archive to {} failed", a.to))?;
    let seconds = start.elapsed().as_secs_f64();
    for d in &report.damage {
        eprintln!("mover: warning: {d}");
        events::emit("warning", serde_json::json!({"message": d}));
    }
    for (off, len) in &report.lost {
        let m = format!(
            "disk {}: bytes {off}..{} are lost (left as zeros)",
            report.disk,
            off + len
        );
        eprintln!("mover: warning: {m}");
        events::emit("warning", serde_json::json!({"message": m}));
    }
    output::archive_restore_summary(&report, seconds, a.json, quiet);
    Ok(
        if report.damage.is_empty() && report.lost.is_empty() && report.verified {
            Exit::Success
        } else {
            Exit::Warnings
        },
    )
}

fn archive_cmd(cmd: &ArchiveCommand, quiet: bool) -> anyhow::Result<Exit> {
    let progress = Arc::new(Progress::default());
    match cmd {
        ArchiveCommand::Ls(a) | ArchiveCommand::Verify(a) => {
            let check = matches!(cmd, ArchiveCommand::Verify(_));
            let input = mover::archive::open_input(&a.path)?;
            let bar =
                output::ProgressBar::start(&progress, check && show_progress(quiet), "verify");
            let result =
                mover::archive::read_archive(input, check, &progress, password()?.as_ref());
            bar.finish();
            let listing = result.with_context(|| format!("cannot read archive {}", a.path))?;
            output::archive_listing(&listing, check, a.json, quiet)?;
            let ok = listing.damage.is_empty() && listing.trailer.is_some_and(|t| t.verified);
            Ok(match (ok, check) {
                (true, _) => Exit::Success,
                (false, true) => Exit::Failure,
                (false, false) => Exit::Warnings,
            })
        }
        ArchiveCommand::Import(a) => {
            let repo = open_repo(&a.repo)?;
            let input = mover::archive::open_input(&a.path)?;
            let bar = output::ProgressBar::start(&progress, show_progress(quiet), "import");
            let result =
                mover::archive::import_archive(&repo, input, &progress, password()?.as_ref());
            bar.finish();
            let (id, m, new) = result.map_err(|e| {
                let what = format!("import of {}", a.path);
                failed_uncommitted(e.into(), &what, "no snapshot was committed")
            })?;
            output::import_summary(&id, &m, new, a.json, quiet);
            Ok(Exit::Success)
        }
        ArchiveCommand::Export(a) => {
            let repo = open_repo(&a.repo)?;
            let (id, manifest) = repo.find_snapshot(&a.snapshot, a.name.as_deref())?;
            let key = match a.format.encrypt {
                true => Some(targets::archive::ArchiveKey::new(
                    &password_for_new("the archive")?,
                    chunker::crypto::KdfParams::default(),
                    a.format.cipher.unwrap_or_else(Aead::preferred),
                )?),
                false => None,
            };
            let created = archive_created(&a.to, &a.format);
            let result = (|| -> anyhow::Result<_> {
                let (sink, _) = open_archive_sink(&a.to, &a.format)?;
                let disks: Vec<(String, u64)> = manifest
                    .disks
                    .iter()
                    .map(|d| (d.name.clone(), d.source_len))
                    .collect();
                let chunk = match manifest.disks[0].chunking {
                    chunker::format::Chunking::Fixed(s) | chunker::format::Chunking::Cdc(s) => s,
                };
                let header = mover::archive::header_for(&disks, chunk, Vec::new(), &manifest.name);
                let target = mover::archive::ArchiveTarget::new(
                    sink,
                    &archive_options(&a.format),
                    header,
                    Vec::new(),
                    key,
                )?;
                let bar = output::ProgressBar::start(&progress, show_progress(quiet), "export");
                let result = mover::archive::export_archive(&repo, &manifest, &target, &progress);
                bar.finish();
                result?;
                Ok(target.finished().expect("a committed archive").0)
            })();
            let summary = match result {
                Ok(s) => s,
                Err(e) => {
                    remove_archive(&a.to, created);
                    return Err(e.context(format!("export of snapshot {} failed", short(&id))));
                }
            };
            output::export_summary(&id, &summary, a.json, quiet);
            Ok(Exit::Success)
        }
    }
}

fn snapshots(a: &SnapshotsArgs) -> anyhow::Result<Exit> {
    let repo = open_repo(&a.repo)?;
    let list: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, m)| a.name.as_ref().is_none_or(|n| &m.name == n))
        .collect();
    let damaged = targets::gc::damaged_marks(&**repo.backend())?;
    output::snapshot_list(&list, &damaged, a.json)?;
    Ok(Exit::Success)
}

fn forget(a: &cli::ForgetArgs) -> anyhow::Result<Exit> {
    use chunker::format::ObjectId;
    let policy = mover::forget::Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within_ms: a.keep_within,
    };
    match (a.snapshots.is_empty(), policy.is_empty()) {
        (true, true) => {
            return Err(usage(
                "give the snapshots to forget, or a policy (--keep-last, --keep-daily, …,                  --keep-within); forget never removes every snapshot",
            ))
        }
        (false, false) => {
            return Err(usage(
                "give either snapshot ids or a --keep-* policy, not both",
            ))
        }
        _ => {}
    }
    let repo = open_repo(&a.repo)?;
    let all = repo.snapshots()?;
    // (id, name, created_ms, keep, reasons)
    let mut rows: Vec<(ObjectId, String, i64, bool, Vec<String>)> = Vec::new();
    if policy.is_empty() {
        let ids = repo.snapshot_ids()?;
        let mut chosen = std::collections::BTreeSet::new();
        for spec in &a.snapshots {
            let spec_l = spec.to_ascii_lowercase();
            let id = if spec_l == "latest" {
                repo.find_snapshot(spec, a.name.as_deref())?.0
            } else {
                let found: Vec<&ObjectId> = ids
                    .iter()
                    .filter(|id| !spec_l.is_empty() && id.to_hex().starts_with(&spec_l))
                    .collect();
                match found.as_slice() {
                    [one] => **one,
                    [] => anyhow::bail!(
                        "snapshot '{spec}' not found; list them with `mover snapshots`; nothing was removed"
                    ),
                    many => anyhow::bail!(
                        "snapshot '{spec}' is ambiguous: it matches {} snapshots; give more characters; nothing was removed",
                        many.len()
                    ),
                }
            };
            if let Some(want) = &a.name {
                if let Some((_, m)) = all.iter().find(|(i, _)| *i == id) {
                    if &m.name != want {
                        anyhow::bail!(
                            "snapshot '{spec}' is named '{}', not '{want}'; nothing was removed",
                            m.name
                        );
                    }
                }
            }
            chosen.insert(id);
        }
        for id in chosen {
            let (name, created) = all
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, m)| (m.name.clone(), m.created_ms))
                .unwrap_or_else(|| ("?".into(), 0));
            rows.push((id, name, created, false, vec!["named".into()]));
        }
    } else {
        // Snapshots marked damaged are kept and do not count toward the rules: a damaged
        // newest snapshot must not push out the last one that restores.
        let damaged = targets::gc::damaged_marks(&**repo.backend())?;
        let named = all
            .iter()
            .filter(|(_, m)| a.name.as_ref().is_none_or(|n| &m.name == n));
        let (marked, group): (Vec<_>, Vec<_>) = named.partition(|(id, _)| damaged.contains(id));
        for (id, m) in marked {
            let why = "damaged: kept, not counted by the policy (`mover forget` it by id)";
            rows.push((*id, m.name.clone(), m.created_ms, true, vec![why.into()]));
        }
        let input: Vec<(&str, i64)> = group
            .iter()
            .map(|(_, m)| (m.name.as_str(), m.created_ms))
            .collect();
        for v in mover::forget::apply(&input, &policy) {
            let (id, m) = group[v.index];
            rows.push((*id, m.name.clone(), m.created_ms, v.keep, v.reasons));
        }
    }
    if !a.dry_run {
        let backend = repo.backend();
        for (id, ..) in rows.iter().filter(|r| !r.3) {
            backend
                .delete(&format!("snapshots/{}", id.to_hex()))
                .with_context(|| format!("cannot remove snapshot {}", short(id)))?;
            backend.delete(&targets::gc::damage_key(id))?;
        }
    }
    output::forget_report(&rows, a.dry_run, a.json)?;
    Ok(Exit::Success)
}

fn gc(a: &cli::GcArgs) -> anyhow::Result<Exit> {
    let repo = open_repo(&a.repo)?;
    let opts = targets::gc::GcOptions {
        grace_ms: a.grace,
        dry_run: a.dry_run,
        max_repack_bytes: a.max_repack.unwrap_or(u64::MAX),
        ..targets::gc::GcOptions::default()
    };
    let report = targets::gc::collect(&repo, &opts).context("garbage collection stopped")?;
    output::gc_report(&report, a.dry_run, a.json)?;
    Ok(if report.warnings.is_empty() {
        Exit::Success
    } else {
        Exit::Warnings
    })
}

fn check(a: &cli::CheckArgs) -> anyhow::Result<Exit> {
    let repo = open_repo(&a.repo)?;
    let report = targets::gc::check(&repo).context("check could not finish")?;
    output::check_report(&report, repo.warnings(), a.json)?;
    if report.errors.is_empty() && repo.warnings().is_empty() {
        Ok(Exit::Success)
    } else {
        eprintln!(
            "mover: the repository has {} problem(s); see above for what to do",
            report.errors.len() + repo.warnings().len()
        );
        Ok(Exit::Failure)
    }
}

fn repair(c: &RepairCommand) -> anyhow::Result<Exit> {
    match c {
        RepairCommand::Index(a) => {
            let repo = open_repo(&a.repo)?;
            let r = targets::gc::repair_index(&repo, a.dry_run).context("repair index stopped")?;
            output::repair_index_report(&r, a.dry_run, a.json)?;
            Ok(if r.unreadable.is_empty() && r.recovered.is_empty() {
                Exit::Success
            } else {
                Exit::Warnings
            })
        }
        RepairCommand::Snapshots(a) => {
            let repo = open_repo(&a.repo)?;
            let r = targets::gc::repair_snapshots(&repo, a.dry_run)
                .context("repair snapshots stopped")?;
            output::repair_snapshots_report(&r, a.dry_run, a.json)?;
            Ok(if r.is_empty() {
                Exit::Success
            } else {
                Exit::Warnings
            })
        }
    }
}

fn restore(a: &RestoreArgs, quiet: bool) -> anyhow::Result<Exit> {
    if !a.from_archive.is_empty() {
        return restore_from_archive(a, quiet);
    }
    let repo = open_repo(&a.repo)?;
    let spec = a.snapshot.as_deref().unwrap_or("latest");
    let (id, manifest) = repo.find_snapshot(spec, a.name.as_deref())?;
    let dest = if a.to == "-" {
        Destination::Stdout
    } else {
        Destination::Path(a.to.clone().into())
    };
    let opts = mover::RestoreOptions {
        force: a.force,
        threads: restore_threads(&a.perf, &a.repo),
        memory: a.perf.memory,
        task_bytes: if is_s3(&a.repo) {
            mover::REMOTE_TASK_BYTES
        } else {
            mover::LOCAL_TASK_BYTES
        },
        sync: !a.no_sync,
    };
    if let Some(name) = &a.attachment {
        return save_attachment(&manifest, name, a, quiet);
    }
    let disk = match (&a.disk, manifest.disks.as_slice()) {
        (Some(n), _) => manifest.disk(n).ok_or_else(|| {
            usage(format!(
                "snapshot {} has no disk {n}; its disks are {}",
                short(&id),
                disk_names(&manifest)
            ))
        })?,
        (None, [one]) => one,
        (None, _) => {
            return Err(usage(format!(
                "snapshot {} holds several disks ({}); pick one with --disk NAME",
                short(&id),
                disk_names(&manifest)
            )))
        }
    };
    let progress = Arc::new(Progress::default());
    let bar = output::ProgressBar::start(&progress, show_progress(quiet), "restore");
    let result = if a.delta {
        delta_target(a, disk.source_len).and_then(|(t, changed)| {
            Ok(mover::restore_delta(
                &repo,
                disk,
                t.as_ref(),
                changed.as_deref(),
                &opts,
                &progress,
            )?)
        })
    } else {
        mover::restore(&repo, disk, &dest, &opts, &progress).map_err(anyhow::Error::from)
    };
    bar.finish();
    let report =
        result.with_context(|| format!("restore of snapshot {} to {} failed", short(&id), a.to))?;
    output::restore_summary(&id, &report, a.json, quiet)?;
    Ok(Exit::Success)
}

/// Opens the destination of a delta restore (an existing file, block device or writable NBD
/// export) and reads what is known about where it changed.
#[allow(clippy::type_complexity)]
fn delta_target(
    a: &RestoreArgs,
    len: u64,
) -> anyhow::Result<(Box<dyn mover::DeltaTarget>, Option<Vec<(u64, u64)>>)> {
    let to = &a.to;
    if to == "-" {
        return Err(usage(
            "--delta needs an existing file, device or NBD export to compare, not stdout",
        ));
    }
    let mut changed = match &a.changed_extents {
        Some(file) => {
            let text = read_text(file, "changed-extent list")?;
            Some(mover::parse_disk_change_info(&text, len, file)?)
        }
        None => None,
    };
    if is_nbd(to) {
        let opts = mover::NbdOptions {
            bitmap: a.bitmap.clone(),
            ..Default::default()
        };
        let nbd = mover::NbdSource::connect(to, &opts)?;
        if nbd.is_read_only() {
            anyhow::bail!("NBD export {to} is read-only; export it writable for a delta restore");
        }
        if a.bitmap.is_some() {
            changed = Some(nbd.dirty_extents()?);
        }
        return Ok((Box::new(nbd), changed));
    }
    if a.bitmap.is_some() {
        return Err(usage(format!(
            "--bitmap needs an NBD destination, and {to} is not one; use --changed-extents"
        )));
    }
    let file = mover::FileDelta::open(std::path::Path::new(to), len)?;
    Ok((Box::new(file), changed))
}

/// The contents of FILE, or of stdin for `-`.
fn read_text(file: &str, what: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
            .with_context(|| format!("cannot read the {what} from stdin"))?;
        return Ok(t);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read the {what} {file}"))
}

fn disk_names(m: &chunker::format::Manifest) -> String {
    m.disks
        .iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes an attachment of a snapshot to `--to` (a new file, or stdout).
fn save_attachment(
    m: &chunker::format::Manifest,
    name: &str,
    a: &RestoreArgs,
    quiet: bool,
) -> anyhow::Result<Exit> {
    let Some(att) = m.attachments.iter().find(|x| x.name == name) else {
        let names: Vec<_> = m.attachments.iter().map(|x| x.name.as_str()).collect();
        return Err(usage(format!(
            "the snapshot has no attachment {name}; it has: {}",
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        )));
    };
    if a.to == "-" {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(&att.data)
            .and_then(|()| out.flush())
            .context("cannot write stdout")?;
    } else {
        let mut open = std::fs::OpenOptions::new();
        open.write(true);
        if a.force {
            open.create(true).truncate(true);
        } else {
            open.create_new(true);
        }
        let mut f = open.open(&a.to).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                anyhow::Error::from(mover::Error::DestinationExists { path: a.to.clone() })
            }
            _ => anyhow::Error::from(e).context(format!("cannot write {}", a.to)),
        })?;
        std::io::Write::write_all(&mut f, &att.data).context(format!("cannot write {}", a.to))?;
        f.sync_all().context(format!("cannot write {}", a.to))?;
        if !quiet {
            eprintln!(
                "saved attachment {name} ({} bytes) to {}",
                att.data.len(),
                a.to
            );
        }
    }
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
    let seed = u64::from_le_bytes(targets::random_bytes());
    let select = |id: &chunker::ChunkId| {
        let b = id.as_bytes();
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        match a.subset {
            None => true,
            Some(Subset::Part(n, m)) => word(8) % u64::from(m) == u64::from(n - 1),
            Some(Subset::Percent(p)) => (((word(0) ^ seed) % 1_000_000) as f64) < p * 10_000.0,
        }
    };
    let result = mover::verify(
        &repo,
        selected,
        fetch_threads(&a.perf, &a.repo),
        &progress,
        &select,
    );
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

fn doctor(a: &DoctorArgs) -> anyhow::Result<Exit> {
    if a.source.is_empty() && a.repo.is_none() {
        return Err(usage("give --source SRC and/or -r REPO to check"));
    }
    let checks = doctor_checks(a);
    output::doctor_report(&checks, a.json, &mut std::io::stdout().lock())?;
    Ok(if checks.iter().all(|c| c.ok) {
        Exit::Success
    } else {
        Exit::Failure
    })
}

fn support_bundle(a: &cli::SupportBundleArgs, cli: &Cli) -> anyhow::Result<Exit> {
    let quiet = cli.quiet;
    let mut tar = bundle::Tar::new();
    tar.add("mover/versions.txt", bundle::versions().as_bytes());
    tar.add("mover/environment.txt", bundle::environment().as_bytes());
    let config = match mover::config::Config::load(cli.config.as_deref()) {
        Ok(c) => c.redacted(),
        Err(e) => format!("# the configuration file cannot be loaded: {e}\n"),
    };
    tar.add("mover/config.toml", config.as_bytes());
    let checks = doctor_checks(&a.doctor);
    let mut text = Vec::new();
    output::doctor_report(&checks, false, &mut text)?;
    tar.add("mover/doctor.txt", &text);
    if let Some(location) = &a.doctor.repo {
        let repo = doctor_repo_arg(&a.doctor, location);
        let summary = match open_repo(&repo).and_then(|r| Ok(r.snapshots()?)) {
            Ok(list) => {
                let mut t = format!("{} snapshots\n", list.len());
                for (id, m) in &list {
                    t.push_str(&format!(
                        "{}  {}  {}  {} bytes  {} disk(s)\n",
                        &id.to_hex()[..12],
                        output::timestamp(m.created_ms),
                        m.name,
                        m.total_len(),
                        m.disks.len()
                    ));
                }
                t
            }
            Err(e) => format!("cannot list snapshots: {}\n", one_line(&e)),
        };
        tar.add("mover/repository.txt", summary.as_bytes());
    }
    for (i, log) in a.logs.iter().enumerate() {
        let name = std::path::Path::new(log)
            .file_name()
            .map_or_else(|| format!("log-{i}"), |n| n.to_string_lossy().into_owned());
        match bundle::log_tail(std::path::Path::new(log), 1 << 20) {
            Ok(data) => tar.add(&format!("mover/logs/{i}-{name}"), &data),
            Err(e) => tar.add(
                &format!("mover/logs/{i}-{name}.error"),
                e.to_string().as_bytes(),
            ),
        }
    }
    let bytes = bundle::write(&a.out, tar.finish(), a.force)?;
    if !quiet && a.out != "-" {
        eprintln!("wrote support bundle {} ({bytes} bytes)", a.out);
    }
    Ok(Exit::Success)
}

fn doctor_repo_arg(a: &DoctorArgs, location: &str) -> RepoArg {
    RepoArg {
        repo: location.to_string(),
        s3_endpoint: a.s3_endpoint.clone(),
        s3_region: a.s3_region.clone(),
        s3_virtual_hosted: a.s3_virtual_hosted,
        s3_allow_http: a.s3_allow_http,
        s3_retry_timeout: 20,
        connections: 16,
    }
}

fn doctor_checks(a: &DoctorArgs) -> Vec<mover::doctor::Check> {
    use mover::doctor::{check_repository, check_source, Check};
    let read_for = std::time::Duration::from_secs_f64(a.read_seconds.clamp(0.0, 60.0));
    let mut checks: Vec<Check> = Vec::new();
    for src in &a.source {
        checks.extend(check_source(src, read_for));
    }
    if let Some(location) = &a.repo {
        let repo = doctor_repo_arg(a, location);
        let subject = format!("repository {location}");
        let backend: Option<Arc<dyn Backend>> = if is_s3(&repo) {
            match s3_backend(&repo) {
                Ok(s3) => {
                    checks.push(Check {
                        subject: subject.clone(),
                        name: "credentials",
                        ok: true,
                        detail: "the bucket answers with these credentials".into(),
                        fix: None,
                    });
                    let detail = match s3.honours_conditional_put() {
                        Ok(true) => "the server honours If-None-Match".to_string(),
                        Ok(false) => {
                            "the server ignores If-None-Match (mover does not depend on it)".into()
                        }
                        Err(e) => format!("cannot tell ({e})"),
                    };
                    checks.push(Check {
                        subject: subject.clone(),
                        name: "conditional writes",
                        ok: true,
                        detail,
                        fix: None,
                    });
                    Some(Arc::new(s3))
                }
                Err(e) => {
                    checks.push(Check {
                        subject: subject.clone(),
                        name: "credentials",
                        ok: false,
                        detail: one_line(&e),
                        fix: Some(
                            "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the endpoint and the bucket".into(),
                        ),
                    });
                    None
                }
            }
        } else {
            Some(Arc::new(LocalBackend::new(location)))
        };
        if let Some(backend) = backend {
            let local = (!is_s3(&repo)).then(|| std::path::Path::new(location));
            let mut options = repo_options(&repo);
            options.password = password().unwrap_or(None);
            checks.extend(check_repository(location, backend, options, local));
        }
    }
    checks
}

/// Parses the command line. `backup --profile NAME` first writes the profile's settings into
/// it, for the arguments that no flag or environment variable gives (flags > environment >
/// file; see `mover::config`).
fn parse_cli() -> anyhow::Result<Cli> {
    use clap::{CommandFactory, FromArgMatches};
    let argv = mover::config::with_profile(
        &Cli::command(),
        std::env::args_os().collect(),
        "backup",
        &|k| std::env::var_os(k),
    )?;
    Ok(Cli::from_arg_matches(
        &Cli::command().try_get_matches_from(argv)?,
    )?)
}

fn benchmark(a: &cli::BenchmarkArgs) -> anyhow::Result<Exit> {
    use std::io::Write;
    if !(0.01..=60.0).contains(&a.seconds) {
        return Err(usage("--seconds takes 0.01 to 60 seconds"));
    }
    let mut opts = mover::benchmark::BenchOptions {
        seconds: a.seconds,
        level: a.compression,
        source: a.source.clone(),
        ..Default::default()
    };
    if let Some(n) = a.threads {
        opts.threads = usize::from(n);
    }
    let report = mover::benchmark::run(&opts)?;
    if a.json {
        events::emit("summary", report.to_json());
    } else {
        std::io::stdout()
            .lock()
            .write_all(report.to_table().as_bytes())?;
    }
    Ok(Exit::Success)
}

fn show_progress(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

fn short(id: &chunker::format::ObjectId) -> String {
    id.to_hex()[..12].to_string()
}
