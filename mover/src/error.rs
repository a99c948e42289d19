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
            _ => false,
        }
    }
}
