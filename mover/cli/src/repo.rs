//! Opening repositories for the commands: the backend named by `-r` (a directory or
//! `s3://`), its options, and the secrets (the password from `--password-file`,
//! `MOVER_PASSWORD`, a profile, or a prompt on a terminal).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chunker::crypto::Password;
use targets::{Backend, LocalBackend, Repository, RepositoryOptions, S3Backend, S3Options};

use crate::args::{BackupArgs, Cli, Command, PerfArgs, RepoArg};
use crate::usage;

pub fn is_s3(repo: &RepoArg) -> bool {
    repo.repo.starts_with("s3://")
}

pub fn backend(repo: &RepoArg) -> anyhow::Result<Arc<dyn Backend>> {
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

pub fn s3_backend(repo: &RepoArg) -> anyhow::Result<S3Backend> {
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

pub fn repo_options(repo: &RepoArg) -> RepositoryOptions {
    if !is_s3(repo) {
        return RepositoryOptions::default();
    }
    // Uploads wait on the network: several smaller packs in flight, within the same memory
    // budget.
    let cache_dir = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("mover"));
    RepositoryOptions {
        pack_size: 16 << 20,
        writers: usize::from(repo.connections).clamp(1, 6),
        cache_dir,
        password: None,
        ..RepositoryOptions::default()
    }
}

/// The password of this run: where it comes from, and once read (from the file, the
/// environment or a prompt), the password itself.
pub struct Secrets {
    /// `--password-file`, or the profile's.
    file: Option<PathBuf>,
    /// The password, once read.
    cached: Mutex<Option<Password>>,
}

impl Secrets {
    /// The secrets of a run whose password is in `file` (else `MOVER_PASSWORD`, else asked).
    pub fn new(file: Option<PathBuf>) -> Self {
        Secrets {
            file,
            cached: Mutex::new(None),
        }
    }

    /// The password given (`--password-file`, then `MOVER_PASSWORD`), if any.
    pub fn password(&self) -> anyhow::Result<Option<Password>> {
        let mut cached = self.cached.lock().expect("password lock");
        if cached.is_none() {
            *cached = secret(self.file.as_deref(), "MOVER_PASSWORD")?;
        }
        Ok(cached.clone())
    }

    /// The password for something new (an encrypted repository or archive): given, or asked
    /// twice on a terminal.
    pub fn password_for_new(&self, what: &str) -> anyhow::Result<Password> {
        if let Some(p) = self.password()? {
            return Ok(p);
        }
        new_secret(None, "MOVER_PASSWORD", what)
    }
}

/// `backup --profile NAME`: the `password_file` of the profile's repository, when neither
/// `--password-file` nor `MOVER_PASSWORD` gives a password (flags > environment > file).
pub fn profile_password_file(cli: &Cli) -> anyhow::Result<Option<PathBuf>> {
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
    let config = crate::config::Config::load(cli.config.as_deref())?;
    let profile = config.profile(name)?;
    Ok(profile.repository.and_then(|(_, r)| r.password_file))
}

/// The first line of a password file.
fn read_password_file(path: &Path) -> anyhow::Result<Password> {
    let shown = path.display();
    // Only the first line counts: a password file that never ends is not read past 64 KiB.
    let mut bytes = mover::sys::read_to_limit(
        std::fs::File::open(path).with_context(|| format!("cannot read the password file {shown}"))?,
        64 << 10,
    )
    .with_context(|| format!("cannot read the password file {shown}"))?
    .ok_or_else(|| usage(format!("the password file {shown} is larger than 64 KiB; give a file whose first line is the password")))?;
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
fn secret(file: Option<&Path>, var: &str) -> anyhow::Result<Option<Password>> {
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

/// Asks for a password on the terminal; `None` when stdin is not a terminal (backup software
/// never gets a prompt).
pub fn prompt(question: &str) -> anyhow::Result<Option<Password>> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    {
        use std::io::Write as _;
        let mut err = std::io::stderr();
        let _ = write!(err, "{question}: ").and_then(|()| err.flush());
    }
    let line = mover::sys::read_line_without_echo().context("cannot read the password")?;
    if line.is_empty() {
        return Err(usage("no password entered"));
    }
    Ok(Some(Password::new(line)))
}

/// Opens the repository of `-r`, asking for its password on a terminal when it needs one
/// and none was given.
pub fn open_repo(repo: &RepoArg, secrets: &Secrets) -> anyhow::Result<Repository> {
    let mut options = repo_options(repo);
    options.password = secrets.password()?;
    let opened = match Repository::open(backend(repo)?, options.clone()) {
        Err(targets::Error::PasswordRequired { location }) => {
            let Some(p) = prompt(&format!("password of {location}"))? else {
                return Err(targets::Error::PasswordRequired { location }.into());
            };
            *secrets.cached.lock().expect("password lock") = Some(p.clone());
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

pub fn new_secret(file: Option<&Path>, var: &str, what: &str) -> anyhow::Result<Password> {
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

pub fn threads(perf: &PerfArgs) -> usize {
    perf.threads
        .map_or_else(mover::default_threads, usize::from)
}

/// Workers for verify: they wait on fetches, so on S3 one per connection.
pub fn fetch_threads(perf: &PerfArgs, repo: &RepoArg) -> usize {
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
pub fn restore_threads(perf: &PerfArgs, repo: &RepoArg) -> usize {
    match perf.threads {
        None if is_s3(repo) => {
            let by_memory = perf.memory / 2 / mover::REMOTE_TASK_BYTES;
            usize::from(repo.connections).min(by_memory.max(2) as usize)
        }
        _ => fetch_threads(perf, repo),
    }
}
