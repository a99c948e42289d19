//! Arguments of the file-level commands: ls, cat, extract, find.

use clap::{Args, Subcommand};

use super::RepoArg;

/// Files inside the disks of snapshots, read without restoring a disk.
#[derive(Subcommand, Debug)]
pub enum FilesCommand {
    /// List a directory inside a snapshot: its disks, partitions (p1…pN) or files.
    Ls(LsArgs),
    /// Write one file of a snapshot to stdout.
    Cat(CatArgs),
    /// Copy files and directory trees out of a snapshot, with modes, owners, times and links.
    Extract(ExtractArgs),
    /// Find which snapshots hold a path matching a pattern, newest first.
    Find(FindArgs),
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Snapshot id, unique id prefix, or `latest`.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Path in the snapshot: [DISK/][pN/]PATH (the top when left out).
    #[arg(value_name = "PATH", default_value = "")]
    pub path: String,
    /// Pick among snapshots with this name (for `latest`).
    #[arg(long)]
    pub name: Option<String>,
    /// Long listing: type and mode, owner, size, modification time.
    #[arg(short = 'l', long)]
    pub long: bool,
    /// Everything below the path too.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Print JSON Lines, one entry per line.
    #[arg(long)]
    pub json: bool,
    /// Memory for cached chunks (e.g. 256MiB).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = super::parse_memory)]
    pub memory: u64,
}

#[derive(Args, Debug)]
pub struct CatArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Snapshot id, unique id prefix, or `latest`.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// The file: [DISK/][pN/]PATH.
    #[arg(value_name = "PATH")]
    pub path: String,
    /// Pick among snapshots with this name (for `latest`).
    #[arg(long)]
    pub name: Option<String>,
    /// Memory for cached chunks (e.g. 256MiB).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = super::parse_memory)]
    pub memory: u64,
}

#[derive(Args, Debug)]
pub struct ExtractArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Snapshot id, unique id prefix, or `latest`.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Files or directories: [DISK/][pN/]PATH; each lands in DIR under its own name.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<String>,
    /// Destination directory (made if missing).
    #[arg(long, value_name = "DIR")]
    pub to: String,
    /// Overwrite files that exist in DIR.
    #[arg(long)]
    pub force: bool,
    /// Pick among snapshots with this name (for `latest`).
    #[arg(long)]
    pub name: Option<String>,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
    /// Memory for cached chunks (e.g. 256MiB).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = super::parse_memory)]
    pub memory: u64,
}

#[derive(Args, Debug)]
pub struct FindArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Shell pattern (`*`, `**`, `?`, `[a-z]`): matched against file names, or against
    /// whole paths when it holds a `/`.
    #[arg(value_name = "GLOB")]
    pub pattern: String,
    /// Only snapshots with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Print JSON Lines, one match per line.
    #[arg(long)]
    pub json: bool,
    /// Memory for cached chunks (e.g. 256MiB).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = super::parse_memory)]
    pub memory: u64,
}

impl FilesCommand {
    /// The command's name, whether events go to stdout, and whether data does (ls and find
    /// print their JSON Lines themselves, like `snapshots --json`).
    pub fn describe(&self) -> (&'static str, bool, bool) {
        match self {
            FilesCommand::Ls(_) => ("ls", false, false),
            FilesCommand::Cat(_) => ("cat", false, true),
            FilesCommand::Extract(a) => ("extract", a.json, false),
            FilesCommand::Find(_) => ("find", false, false),
        }
    }
}
