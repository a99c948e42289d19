use std::io;
use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong where bytes are stored. Variants say what the caller can do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object, chunk or snapshot does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// A snapshot prefix matches several snapshots.
    #[error("snapshot '{prefix}' is ambiguous: it matches {count} snapshots; give more characters of the id")]
    Ambiguous {
        /// The prefix given.
        prefix: String,
        /// How many matched.
        count: usize,
    },
    /// The location holds something that is not a mover repository.
    #[error("{location} is not a mover repository ({detail}); create one with `mover init -r {location}`")]
    NotARepository {
        /// Where.
        location: String,
        /// Why not.
        detail: String,
    },
    /// The location holds a repository whose `config` is damaged or lost; its data may be
    /// intact. `mover repair config` writes a new config from what the repository holds.
    #[error("{location} holds a mover repository whose config is damaged or lost ({detail}); the data may be intact: `mover repair config -r {location}` writes a new config from what the repository holds (see docs/FORMAT.md, \"A damaged config\")")]
    ConfigDamaged {
        /// Where.
        location: String,
        /// What is wrong with the config.
        detail: String,
    },
    /// `init` on a location that is not empty.
    #[error("{location} is not empty; choose an empty or new directory for a new repository")]
    NotEmpty {
        /// Where.
        location: String,
    },
    /// Stored bytes do not decode or do not match their name.
    #[error("{what} is corrupt: {detail}")]
    Corrupt {
        /// The damaged object.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Decoding a structure or chunk failed.
    #[error(transparent)]
    Format(#[from] chunker::Error),
    /// The device holding `path` is full.
    #[error("no space left on the device holding {path}; free space there and try again")]
    NoSpace {
        /// The file being written.
        path: PathBuf,
    },
    /// Any other I/O failure, with the operation and path.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A remote store refused or could not be reached.
    #[error("{location}: {detail}")]
    Backend {
        /// The object or store.
        location: String,
        /// What went wrong and what to do.
        detail: String,
    },
    /// The store's client settings cannot work (plain HTTP not allowed, an endpoint that is
    /// not a URL, no region or no credentials where they are needed); nothing was sent. Fix
    /// the settings and run again.
    #[error("{location}: {problem}; {fix}")]
    Misconfigured {
        /// The store.
        location: String,
        /// What is wrong, one clause.
        problem: String,
        /// What to change, one clause.
        fix: String,
    },
    /// The request that commits a snapshot failed without an answer (the server went away),
    /// and whether the snapshot landed could not be learned either.
    #[error("the commit of snapshot {snapshot} got no answer ({detail}) and could not be checked; `mover snapshots` shows whether it landed (a listed snapshot is complete)")]
    CommitUnknown {
        /// The snapshot's id.
        snapshot: String,
        /// Why the commit failed.
        detail: String,
    },
    /// An option or argument is out of range (block size, volume size, an oversized frame);
    /// fix it and run again.
    #[error("{detail}")]
    InvalidArgument {
        /// What is wrong and what would be accepted.
        detail: String,
    },
    /// The medium is full and cannot take what must go on it (a volume too small for one
    /// whole frame); use larger media or a larger volume size.
    #[error("{location}: end of medium: {detail}")]
    EndOfMedia {
        /// The sink.
        location: String,
        /// What did not fit.
        detail: String,
    },
    /// Garbage collection condemned packs holding chunks a backup reused, so long ago that a
    /// sweep may remove them before the snapshot would become visible: nothing is committed.
    #[error("garbage collection may remove data this backup reused ({detail}); nothing was committed; run the backup again (it stores fresh copies)")]
    Collected {
        /// What was found.
        detail: String,
    },
    /// The repository or archive is encrypted and no password was given.
    #[error(
        "{location} is encrypted; give its password in MOVER_PASSWORD or with --password-file FILE"
    )]
    PasswordRequired {
        /// The repository or archive.
        location: String,
    },
    /// The password opens none of the keys of the repository or archive.
    #[error("{location}: wrong password (none of its keys opens with it); nothing was changed")]
    WrongPassword {
        /// The repository or archive.
        location: String,
    },
    /// A sealed object failed authentication: tampered with, damaged, or not of this
    /// repository.
    #[error("{object} failed authentication: it was tampered with or damaged")]
    Tampered {
        /// The object (pack and chunk, index segment, snapshot, archive frame).
        object: String,
    },
    /// An earlier write failed, so this store rejects all later writes.
    #[error("an earlier write to this repository failed ({first}); nothing more is accepted")]
    Poisoned {
        /// The first error, as text.
        first: String,
    },
}

impl Error {
    /// Wraps an I/O error with the operation and path it came from; a full disk becomes
    /// [`Error::NoSpace`] and a missing file [`Error::NotFound`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.kind() {
            io::ErrorKind::StorageFull => Error::NoSpace { path },
            io::ErrorKind::NotFound => Error::NotFound {
                what: path.display().to_string(),
            },
            _ => Error::Io { op, path, source },
        }
    }

    /// True when the same call may succeed if tried again (transient I/O conditions).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Io { source, .. } if matches!(
            source.kind(),
            io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ))
    }

    /// True when the settings of the store's client are wrong or missing, found before
    /// anything was sent (a usage error rather than a failure of the store).
    pub fn is_misconfigured(&self) -> bool {
        matches!(self, Error::Misconfigured { .. })
    }

    /// True when the error means stored data is damaged or missing (as opposed to a failure
    /// to reach the store).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::NotFound { .. }
                | Error::Corrupt { .. }
                | Error::Format(_)
                | Error::Tampered { .. }
        )
    }
}
