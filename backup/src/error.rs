use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong with a backup. Each variant names the thing at fault
/// (URL, backup id, file, path) so the message alone tells the operator what to fix.
#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid backup location {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("no backup {id:?} in {url}")]
    NotFound { id: String, url: String },
    #[error("manifest {object}: {detail}")]
    BadManifest { object: String, detail: String },
    #[error("file {file} of backup {backup} is missing from the store (object {object})")]
    Missing { backup: String, file: String, object: String },
    #[error("file {file} of backup {backup} is corrupt (object {object}): {detail}")]
    Corrupt { backup: String, file: String, object: String, detail: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Engine(#[from] chronik_engine::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
