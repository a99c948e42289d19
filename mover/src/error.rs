use std::io;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong moving data. Every message says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source cannot be opened or read.
    #[error("cannot read source {path}: {source}; check the path and that you may read it")]
    Source {
        /// The source as given.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The source ended before its announced length.
    #[error("source {path} ended at {offset} bytes, before its size of {len}; back up a stable snapshot of it")]
    SourceShrank {
        /// The source.
        path: String,
        /// Where the read failed.
        offset: u64,
        /// The size it had when the backup started.
        len: u64,
    },
    /// The restore destination exists and `--force` was not given.
    #[error("destination {path} exists; pass --force to overwrite it")]
    DestinationExists {
        /// The destination.
        path: String,
    },
    /// A block device smaller than the snapshot.
    #[error("destination {path} holds {have} bytes, the snapshot needs {need}; restore to a larger device")]
    DestinationTooSmall {
        /// The destination.
        path: String,
        /// Its size.
        have: u64,
        /// The snapshot's size.
        need: u64,
    },
    /// Writing the restore destination failed.
    #[error("cannot write {path}: {source}")]
    Destination {
        /// The destination.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The destination's device is full.
    #[error("no space left on the device holding {path}; free space there and restore again")]
    DestinationFull {
        /// The destination.
        path: String,
    },
    /// A repository or chunk-store failure.
    #[error(transparent)]
    Store(#[from] targets::Error),
    /// A chunk or structure failed to decode.
    #[error(transparent)]
    Format(#[from] chunker::Error),
    /// An NBD server refused, failed or broke the protocol.
    #[error("NBD source {uri}: {detail}")]
    Nbd {
        /// The NBD URI as given.
        uri: String,
        /// What went wrong and what to do, one line.
        detail: String,
    },
    /// The parent snapshot or change map cannot be used for an incremental backup.
    #[error("{0}")]
    Incremental(String),
    /// A hook command failed.
    #[error("{hook} hook `{command}` {detail}")]
    Hook {
        /// Which hook.
        hook: &'static str,
        /// Its command line.
        command: String,
        /// What happened.
        detail: String,
    },
    /// Stopped by SIGINT or SIGTERM.
    #[error("interrupted")]
    Interrupted,
    /// A request the engine cannot carry out as given: a bad combination of options, found
    /// after parsing (the binary exits 2, as for its own usage errors).
    #[error("{0}")]
    Usage(String),
    /// A request refused as given (a snapshot that is not there, or not the one named); the
    /// message says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// A file to attach to a snapshot cannot be read.
    #[error("cannot read attachment {path}: {source}")]
    Attachment {
        /// The file as given.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A command failed: `what` failed, and `note` says what was (not) committed, unless the
    /// commit's outcome is unknown (then it is empty: the claim could be false).
    #[error("{what} failed{note}")]
    Failed {
        /// What failed: "backup of SRC", "import of PATH".
        what: String,
        /// ", nothing was committed", or empty.
        note: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// Wraps a write error on the restore destination.
    pub(crate) fn destination(path: &str, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::StorageFull {
            Error::DestinationFull { path: path.into() }
        } else {
            Error::Destination {
                path: path.into(),
                source,
            }
        }
    }

    /// True when the error means stored data is damaged or missing.
    pub fn is_damage(&self) -> bool {
        match self {
            Error::Store(e) => e.is_damage(),
            Error::Format(_) => true,
            Error::Failed { source, .. } => source.is_damage(),
            _ => false,
        }
    }

    /// True when SIGINT or SIGTERM stopped the work.
    pub fn is_interrupted(&self) -> bool {
        match self {
            Error::Interrupted => true,
            Error::Failed { source, .. } => source.is_interrupted(),
            _ => false,
        }
    }

    /// True for a request that cannot be carried out as given ([`Error::Usage`]).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Usage(_))
    }

    /// True when a commit got no answer and the store could not be asked either: whether
    /// the snapshot landed is unknown.
    pub fn is_commit_unknown(&self) -> bool {
        match self {
            Error::Store(targets::Error::CommitUnknown { .. }) => true,
            Error::Failed { source, .. } => source.is_commit_unknown(),
            _ => false,
        }
    }

    /// This error as the failure of `what`, saying that `nothing` ("nothing was committed";
    /// empty: say nothing) unless the commit's outcome is unknown. A usage error stays as it
    /// is: the request was refused, nothing failed.
    pub fn failed(self, what: impl Into<String>, nothing: &str) -> Error {
        if self.is_usage() {
            return self;
        }
        let note = match self.is_commit_unknown() || nothing.is_empty() {
            true => String::new(),
            false => format!(", {nothing}"),
        };
        Error::Failed {
            what: what.into(),
            note,
            source: Box::new(self),
        }
    }
}

/// An error and its causes on one line, skipping a cause whose text the line already carries
/// (many errors name their OS error themselves).
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        next = cause.source();
    }
    line.replace('\n', " ")
}
