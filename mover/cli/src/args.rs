//! Command-line parsing. Parsed once into these types, validated, then handed to `main`'s
//! command functions; nothing below `main` sees clap.

use chunker::crypto::Aead;
use clap::{Args, Parser, Subcommand};
use mover::Subset;

mod files;
pub use files::*;

/// A high-throughput streaming data mover for disk images: back up raw images and block
/// devices into a deduplicating, compressing repository and restore them bit-exact.
#[derive(Parser, Debug)]
#[command(
    name = "mover",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No progress bar and no human summaries; errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Write JSON Lines events (begin, progress, warning, error, summary) to FILE (a path,
    /// /dev/fd/N, or - for stdout) instead of stdout; for runs whose data goes to stdout.
    #[arg(long, value_name = "FILE", global = true)]
    pub events: Option<String>,
    /// Level of the log on stderr: error, warn, info, debug or trace (overrides -v and -q).
    #[arg(long, value_name = "LEVEL", global = true, value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: Option<String>,
    /// Also append a timestamped log (at least info) to FILE, for support.
    #[arg(long, value_name = "FILE", global = true)]
    pub log_file: Option<String>,
    /// Configuration file with named repositories, profiles and hook sets [default:
    /// $XDG_CONFIG_HOME/mover/config.toml, else ~/.config/mover/config.toml].
    #[arg(long, value_name = "FILE", env = "MOVER_CONFIG", global = true)]
    pub config: Option<std::path::PathBuf>,
    /// Read the password of an encrypted repository or archive from FILE (its first line)
    /// [default: the MOVER_PASSWORD environment variable; a prompt only when stdin is a
    /// terminal].
    #[arg(long, value_name = "FILE", global = true)]
    pub password_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per run; boxing would only add noise
pub enum Command {
    /// Create a new, empty repository.
    Init(InitArgs),
    /// Back up a raw image, a block device or stdin (`-`) into a repository.
    Backup(BackupArgs),
    /// List the snapshots in a repository.
    Snapshots(SnapshotsArgs),
    /// Restore a snapshot (or an archive) to a file, a block device or stdout (`-`).
    Restore(RestoreArgs),
    /// Serve a snapshot as NBD exports (one per disk) for instant access, read-only or with a
    /// copy-on-write overlay file; runs until SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Tape-style archives: list, verify, import into and export from a repository.
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// The passwords of an encrypted repository: add, list, remove, change.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Read every chunk of one or all snapshots (or a subset) and check it against its id.
    Verify(VerifyArgs),
    /// Remove snapshots by id, or by a retention policy (--keep-*); data goes at the next gc.
    Forget(ForgetArgs),
    /// Garbage collection: condemn unreferenced packs, delete those condemned a grace period
    /// ago, repack mostly-garbage packs. Safe while backups run elsewhere; no lock.
    Gc(GcArgs),
    /// Check the repository's structure without reading chunk data.
    Check(CheckArgs),
    /// Rebuild the index from the packs, or mark snapshots that reference lost chunks.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Check sources and a repository, and say what to do about each problem.
    Doctor(DoctorArgs),
    /// Collect versions, environment (secrets redacted), doctor's report, a repository
    /// summary and recent logs into one tar.zst for support.
    SupportBundle(SupportBundleArgs),
    /// Measure hashing, compression, decompression and a source's read speed on this host,
    /// and say which stage limits a backup.
    Benchmark(BenchmarkArgs),
    /// Print the shell completion script for bash, zsh or fish on stdout.
    Completions(CompletionsArgs),
    /// Print the man page (roff) on stdout.
    Man,
    #[command(flatten)]
    Files(FilesCommand),
}

#[derive(Args, Debug)]
pub struct RepoArg {
    /// Repository: a directory, or s3://BUCKET[/PREFIX] (credentials from AWS_* variables).
    #[arg(
        short = 'r',
        long = "repo",
        env = "MOVER_REPO",
        value_name = "DIR|s3://BUCKET/PREFIX",
        default_value = "",
        hide_default_value = true
    )]
    pub repo: String,
    /// S3 endpoint URL for servers other than AWS [env: AWS_ENDPOINT_URL].
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region [env: AWS_REGION].
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Address buckets as BUCKET.host (virtual-hosted style) instead of host/BUCKET.
    #[arg(long)]
    pub s3_virtual_hosted: bool,
    /// Allow plain HTTP to the S3 endpoint (for servers on loopback).
    #[arg(long, env = "AWS_ALLOW_HTTP", value_parser = clap::builder::BoolishValueParser::new())]
    pub s3_allow_http: bool,
    /// Give up on an S3 request that keeps failing after this many seconds of retries.
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub s3_retry_timeout: u64,
    /// Requests to S3 in flight at once (uploads of packs; fetches on restore and verify). A
    /// restore reads up to 32 MiB of chunks per request and keeps as many in flight as half
    /// of --memory holds, up to this number.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub connections: u16,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Encrypt the repository (the key is wrapped with the password from MOVER_PASSWORD or
    /// --password-file).
    #[arg(long)]
    pub encrypt: bool,
    /// The cipher of --encrypt: aes-256-gcm where the processor has AES instructions,
    /// xchacha20-poly1305 elsewhere, unless given.
    #[arg(long, value_name = "CIPHER", value_parser = parse_cipher, requires = "encrypt")]
    pub cipher: Option<Aead>,
    /// Make the repository immutable (S3 only, on a bucket with Object Lock): every object
    /// is locked for DAYS after it is written, and the packs a backup reuses are extended.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub lock_days: Option<u32>,
    /// The Object Lock mode of --lock-days: governance (users with the bypass permission may
    /// still delete) or compliance (nobody may).
    #[arg(long, value_name = "MODE", requires = "lock_days", value_parser = ["governance", "compliance"])]
    pub lock_mode: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a password: a new key object for the same master key.
    Add(KeyNewArgs),
    /// List the key objects (id, creation time, Argon2id parameters, the one in use).
    List(KeyListArgs),
    /// Remove a key object by id (or unique prefix); not the last one, nor the one in use.
    Remove(KeyRemoveArgs),
    /// Change the password in use: a new key object replaces the one it opened.
    Passwd(KeyNewArgs),
}

#[derive(Args, Debug)]
pub struct KeyNewArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Read the new password from FILE (its first line) [default: MOVER_NEW_PASSWORD; a
    /// prompt only when stdin is a terminal].
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct KeyListArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct KeyRemoveArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// The key's id or a unique prefix of it (see `mover key list`).
    #[arg(value_name = "ID")]
    pub id: String,
}

#[derive(Args, Debug)]
pub struct PerfArgs {
    /// Worker threads [default: one per core, plus one].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
    /// Memory budget for data in flight (e.g. 256MiB).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_memory)]
    pub memory: u64,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Run the backup job NAME of the configuration file (`[profiles.NAME]`): its settings
    /// apply where no flag or environment variable gives one.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// What to back up: an image file, a block device, an NBD export
    /// (nbd+unix:///EXPORT?socket=PATH or nbd://HOST[:PORT]/EXPORT), or `-` for stdin. Repeat
    /// as NAME=SRC to back up several disks of one VM as one snapshot.
    #[arg(long, value_name = "[NAME=]SRC", required = true)]
    pub source: Vec<String>,
    /// Make this backup an incremental of a snapshot (`latest` of the same name, an id or a
    /// unique prefix): with a change map only changed chunks are read, without one every
    /// chunk is read and only new ones stored.
    #[arg(long, value_name = "latest|ID")]
    pub parent: Option<String>,
    /// Read only what this QEMU dirty bitmap marks dirty (NBD sources; needs --parent).
    #[arg(long, value_name = "NAME", requires = "parent")]
    pub bitmap: Option<String>,
    /// Read only the areas of a VMware-style DiskChangeInfo JSON file (`-` for stdin); repeat
    /// as NAME=FILE for several disks. Needs --parent.
    #[arg(long, value_name = "[NAME=]FILE", requires = "parent")]
    pub changed_extents: Vec<String>,
    /// Opaque change token to record with the snapshot for the next run (default: the bitmap
    /// name).
    #[arg(long, value_name = "TOKEN")]
    pub change_id: Option<String>,
    /// Read this many chunks the change map calls clean and compare them with the parent; any
    /// difference falls back to a full compare and exits 3.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub verify_changes: usize,
    /// Store a small file with the snapshot (a VM's configuration, for example); repeatable.
    #[arg(long, value_name = "FILE")]
    pub attach: Vec<String>,
    /// Command run (with `sh -c`) before the sources are opened: freeze the guest, take the
    /// snapshot. If it fails, nothing is read and the backup fails.
    #[arg(long, value_name = "CMD")]
    pub pre_snapshot: Option<String>,
    /// Command run once the sources are open (thaw the guest); it always runs when the
    /// pre-snapshot hook ran, even when the backup failed. Its failure is a warning.
    #[arg(long, value_name = "CMD")]
    pub post_snapshot: Option<String>,
    /// Command run after the backup, with its outcome in MOVER_STATUS, MOVER_EXIT_CODE,
    /// MOVER_SNAPSHOT_ID and MOVER_BYTES_*. Its failure is a warning.
    #[arg(long, value_name = "CMD")]
    pub post_backup: Option<String>,
    /// Time limit of each hook; a hook past it is killed and counts as failed.
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub hook_timeout: u64,
    /// Name to record with the snapshot [default: the source as given; `stdin` for `-`].
    #[arg(long)]
    pub name: Option<String>,
    /// Fixed chunk size for images, a power of two from 64KiB to 16MiB (average size for
    /// stdin).
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_chunk_size)]
    pub chunk_size: u32,
    /// zstd compression level.
    #[arg(long, value_name = "LEVEL", default_value_t = mover::DEFAULT_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression: i32,
    #[command(flatten)]
    pub perf: PerfArgs,
    /// Print a JSON summary on stdout instead of the snapshot id.
    #[arg(long)]
    pub json: bool,
    /// Also write the run's catalog entry (the summary: snapshot id, disks, sizes, change
    /// tokens, bytes, duration, warnings) as one JSON document to FILE.
    #[arg(long, value_name = "FILE")]
    pub catalog_out: Option<String>,
    #[command(flatten)]
    pub archive: ArchiveOut,
    /// Keep the chain of incremental archives in FILE (which chunks earlier archives hold,
    /// and the last manifest); with --parent latest the archive holds only new chunks.
    #[arg(long, value_name = "FILE", requires = "to_archive")]
    pub catalog: Option<String>,
}

/// Where an archive is written.
#[derive(Args, Debug)]
pub struct ArchiveOut {
    /// Write a tape-style archive to PATH (a file, a tape or other device, `-` for stdout)
    /// instead of a repository.
    #[arg(long, value_name = "PATH|-")]
    pub to_archive: Option<String>,
    #[command(flatten)]
    pub format: ArchiveFormat,
}

/// How an archive is written.
#[derive(Args, Debug)]
pub struct ArchiveFormat {
    /// Archive record size, a power of two from 64KiB to 4MiB (tape block size).
    #[arg(long, value_name = "SIZE", default_value = "256KiB", value_parser = parse_block_size)]
    pub block_size: u32,
    /// Split the archive into volumes of at most SIZE (files PATH.000, PATH.001, …).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub volume_size: Option<u64>,
    /// Command run (sh -c, MOVER_VOLUME set) before each further volume: load the next tape.
    #[arg(long, value_name = "CMD")]
    pub next_volume: Option<String>,
    /// Overwrite an existing archive file.
    #[arg(long)]
    pub force: bool,
    /// Encrypt the archive with the password (MOVER_PASSWORD or --password-file); the
    /// incrementals of an encrypted chain are encrypted with the chain's key.
    #[arg(long)]
    pub encrypt: bool,
    /// The cipher of --encrypt (as for `init`); an incremental keeps its chain's.
    #[arg(long, value_name = "CIPHER", value_parser = parse_cipher, requires = "encrypt")]
    pub cipher: Option<Aead>,
}

#[derive(Subcommand, Debug)]
pub enum ArchiveCommand {
    /// Print what an archive holds (disks, sizes, creation time, parents, totals).
    Ls(ArchiveReadArgs),
    /// Read a whole archive and check every chunk, without writing anything.
    Verify(ArchiveReadArgs),
    /// Load an archive's chunks and snapshot into a repository.
    Import(ArchiveImportArgs),
    /// Write a self-contained full archive of a repository snapshot (a virtual full).
    Export(ArchiveExportArgs),
}

#[derive(Args, Debug)]
pub struct ArchiveReadArgs {
    /// The archive: a file, PATH of PATH.000…, a device, or `-` for stdin.
    #[arg(value_name = "PATH|-")]
    pub path: String,
    /// Print JSON Lines events.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ArchiveImportArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// The archive: a file, PATH of PATH.000…, a device, or `-` for stdin.
    #[arg(value_name = "PATH|-")]
    pub path: String,
    /// Print JSON Lines events.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ArchiveExportArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Snapshot id, unique prefix, or `latest`.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Pick among snapshots with this name (for `latest`).
    #[arg(long)]
    pub name: Option<String>,
    /// Where the archive goes: a file, a device, or `-` for stdout.
    #[arg(long, value_name = "PATH|-")]
    pub to: String,
    #[command(flatten)]
    pub format: ArchiveFormat,
    /// Print JSON Lines events.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Only snapshots with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Snapshot id, unique id prefix, or `latest` (not with --from-archive).
    #[arg(value_name = "SNAPSHOT", required_unless_present = "from_archive")]
    pub snapshot: Option<String>,
    /// Restore from tape-style archives instead of a repository: the full first, then each
    /// incremental of its chain, in order (`-` for stdin).
    #[arg(long, value_name = "PATH|-", conflicts_with_all = ["snapshot", "delta", "attachment"])]
    pub from_archive: Vec<String>,
    /// With --from-archive: stop at the first damage (exit 1) instead of restoring what is
    /// intact and reporting what is lost (exit 3).
    #[arg(long, requires = "from_archive")]
    pub strict: bool,
    /// Pick among snapshots with this name (for `latest`).
    #[arg(long)]
    pub name: Option<String>,
    /// Destination: a file (written sparse), a block device, or `-` for stdout.
    #[arg(long, value_name = "DEST")]
    pub to: String,
    /// Which disk of a multi-disk snapshot to restore.
    #[arg(long, value_name = "NAME")]
    pub disk: Option<String>,
    /// Roll an existing destination back: read it, and write only the chunks that differ
    /// from the snapshot.
    #[arg(long)]
    pub delta: bool,
    /// With --delta: only these areas of the destination (a DiskChangeInfo JSON file, `-` for
    /// stdin) changed since it held the snapshot; nothing else is read.
    #[arg(long, value_name = "FILE", requires = "delta")]
    pub changed_extents: Option<String>,
    /// With --delta on an NBD export: only what this dirty bitmap of the destination marks
    /// changed since it held the snapshot is read.
    #[arg(
        long,
        value_name = "NAME",
        requires = "delta",
        conflicts_with = "changed_extents"
    )]
    pub bitmap: Option<String>,
    /// Save the named attachment of the snapshot to the destination instead of a disk.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["disk", "delta"])]
    pub attachment: Option<String>,
    /// Overwrite an existing destination file.
    #[arg(long)]
    pub force: bool,
    /// Do not fsync the destination at the end, and write it through the page cache rather
    /// than with direct I/O (faster to return; a power failure soon after may lose the
    /// restored data).
    #[arg(long)]
    pub no_sync: bool,
    #[command(flatten)]
    pub perf: PerfArgs,
    /// Print a JSON summary (on stderr when restoring to stdout).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Snapshot id, unique id prefix, or `latest`.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Pick among snapshots with this name (for `latest`).
    #[arg(long)]
    pub name: Option<String>,
    /// Serve only this disk of a multi-disk snapshot [default: every disk, one export each].
    #[arg(long, value_name = "NAME")]
    pub disk: Option<String>,
    /// Listen on a unix socket at PATH.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "listen",
        conflicts_with = "listen"
    )]
    pub socket: Option<std::path::PathBuf>,
    /// Listen on TCP at ADDR:PORT (port 0: any free port; the URI printed names it).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Make the export writable: writes go to this sparse overlay file (created if missing,
    /// reused across restarts for the same snapshot and disk); the repository is never
    /// written.
    #[arg(long, value_name = "FILE")]
    pub overlay: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub perf: PerfArgs,
    /// Print the `serving` event (and errors) as JSON Lines on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Snapshot id, unique prefix or `latest` [default: every snapshot].
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: Option<String>,
    /// Only snapshots with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Read and hash chunk data (the default; `mover check` looks at structure only).
    #[arg(long)]
    pub read_data: bool,
    /// Read only a subset of the chunks: `N/M` (the N-th of M fixed parts: run 1/7 … 7/7 on
    /// successive days to cover everything) or `P%` (a random sample).
    #[arg(long, value_name = "N/M|P%", value_parser = parse_subset)]
    pub subset: Option<Subset>,
    #[command(flatten)]
    pub perf: PerfArgs,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

fn parse_subset(s: &str) -> Result<Subset, String> {
    let bad = || format!("'{s}' is not a subset: give N/M (1 <= N <= M) or P% (0 < P <= 100)");
    if let Some(p) = s.strip_suffix('%') {
        let p: f64 = p.trim().parse().map_err(|_| bad())?;
        return (p > 0.0 && p <= 100.0)
            .then_some(Subset::Percent(p))
            .ok_or_else(bad);
    }
    let (n, m) = s.split_once('/').ok_or_else(bad)?;
    let (n, m): (u32, u32) = (
        n.trim().parse().map_err(|_| bad())?,
        m.trim().parse().map_err(|_| bad())?,
    );
    (n >= 1 && n <= m)
        .then_some(Subset::Part(n, m))
        .ok_or_else(bad)
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Snapshots to remove: ids or unique id prefixes (instead of a policy).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Apply the policy only to snapshots with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Keep the N newest snapshots of each name.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_last: Option<usize>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_hourly: Option<usize>,
    /// Keep the newest snapshot of each of the last N days that have one (UTC).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_daily: Option<usize>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_weekly: Option<usize>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_monthly: Option<usize>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_yearly: Option<usize>,
    /// Keep every snapshot taken within this long of the newest of its name (e.g. 7d, 12h).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration_ms)]
    pub keep_within: Option<i64>,
    /// Print what would be kept and removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// How long condemned packs wait before they are deleted; must be more than twice the
    /// longest backup that may run against the repository (e.g. 1h, 30m, 2d); 0s only when
    /// no backup runs meanwhile.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration_ms)]
    pub grace: i64,
    /// Live bytes this run may copy out of mostly-garbage packs [default: no limit].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_repack: Option<u64>,
    /// Compact the index when it has at least this many small segments (one per backup):
    /// merge them into large sorted ones, removed a grace period later; 0: never.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub compact_segments: usize,
    /// Print what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the packs' own lists of their contents.
    Index(RepairArgs),
    /// Mark snapshots that reference chunks no pack holds (deletes nothing).
    Snapshots(RepairArgs),
    /// Write a new config for a repository whose config is damaged or lost, from what the
    /// repository holds (an encrypted one needs its password); keeps the damaged one as
    /// `config.damaged`.
    Config(RepairArgs),
}

#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Print what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

/// A count for a `--keep-*` rule: at least 1 (0 would keep nothing of what the rule is for).
fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "'{s}' is not a count of at least 1 (to remove snapshots, name them or lower another rule)"
        )),
    }
}

fn parse_positive_duration_ms(s: &str) -> Result<i64, String> {
    match parse_duration_ms(s)? {
        0 => Err(format!("'{s}' keeps nothing; give a duration above zero")),
        ms => Ok(ms),
    }
}

/// Parses `90s`, `30m`, `12h`, `7d`, `2w` or combinations (`1d12h`) into milliseconds; a bare
/// number is seconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let bad = || format!("'{s}' is not a duration: give e.g. 90s, 30m, 12h, 7d, 2w or 1d12h");
    let t = s.trim();
    if let Ok(secs) = t.parse::<i64>() {
        return (secs >= 0)
            .then(|| secs.checked_mul(1000))
            .flatten()
            .ok_or_else(bad);
    }
    let (mut total, mut num) = (0i64, String::new());
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit * 1000)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() || t.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// A source to check (image, block device, NBD URI); repeatable.
    #[arg(long, value_name = "SRC")]
    pub source: Vec<String>,
    /// A repository to check: a directory, or s3://BUCKET[/PREFIX].
    #[arg(
        short = 'r',
        long = "repo",
        env = "MOVER_REPO",
        value_name = "DIR|s3://BUCKET/PREFIX"
    )]
    pub repo: Option<String>,
    /// S3 endpoint URL for servers other than AWS [env: AWS_ENDPOINT_URL].
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region [env: AWS_REGION].
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Address buckets as BUCKET.host (virtual-hosted style).
    #[arg(long)]
    pub s3_virtual_hosted: bool,
    /// Allow plain HTTP to the S3 endpoint (for servers on loopback).
    #[arg(long, env = "AWS_ALLOW_HTTP", value_parser = clap::builder::BoolishValueParser::new())]
    pub s3_allow_http: bool,
    /// Seconds of sequential reading to measure a source's throughput.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0)]
    pub read_seconds: f64,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchmarkArgs {
    /// Also measure the sequential read throughput of this source (image, block device,
    /// NBD URI).
    #[arg(long, value_name = "SRC")]
    pub source: Option<String>,
    /// Seconds per measurement.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub seconds: f64,
    /// The zstd level whose rows decide which stage limits.
    #[arg(long, value_name = "LEVEL", default_value_t = mover::DEFAULT_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression: i32,
    /// Workers of the all-core rows [default: one per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: crate::generate::CompletionShell,
}

#[derive(Args, Debug)]
pub struct SupportBundleArgs {
    #[command(flatten)]
    pub doctor: DoctorArgs,
    /// Where to write the bundle (a new .tar.zst file, or `-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub out: String,
    /// Log files to include (their last MiB each), e.g. the --log-file of earlier runs.
    #[arg(long = "include-log", value_name = "FILE")]
    pub logs: Vec<String>,
    /// Overwrite an existing bundle file.
    #[arg(long)]
    pub force: bool,
}

/// Parses `123`, `64KiB`, `64K`, `1MiB`, `1M`, `2GiB`, `2G` (binary units).
/// A cipher name: `aes-256-gcm` or `xchacha20-poly1305`.
pub fn parse_cipher(s: &str) -> Result<Aead, String> {
    Aead::from_name(s)
        .ok_or_else(|| format!("unknown cipher {s:?}: use aes-256-gcm or xchacha20-poly1305"))
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (try 1MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("'{s}' has an unknown unit (use KiB, MiB, GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

fn parse_chunk_size(s: &str) -> Result<u32, String> {
    chunker::check_chunk_size(parse_size(s)?).map_err(|e| e.to_string())
}

fn parse_block_size(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    if !n.is_power_of_two() || !(64 << 10..=4 << 20).contains(&n) {
        return Err(format!("'{s}' is not a power of two from 64KiB to 4MiB"));
    }
    Ok(n as u32)
}

fn parse_memory(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n < 32 << 20 {
        return Err(format!("'{s}' is too little memory; give at least 32MiB"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_chunk_size("3MiB").is_err());
        assert!(parse_chunk_size("32KiB").is_err());
        assert_eq!(parse_chunk_size("16MiB"), Ok(16 << 20));
    }

    #[test]
    fn profile_settings_name_backup_arguments() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        let backup = cmd.find_subcommand("backup").expect("backup");
        for id in crate::config::ARG_IDS {
            let arg = backup.get_arguments().find(|a| a.get_id() == *id);
            assert!(
                arg.is_some_and(|a| a.get_long().is_some()),
                "backup has no --{id}"
            );
        }
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
