use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt key in column family {0}")]
    CorruptKey(&'static str),
    #[error("corrupt partition state row: {0}")]
    CorruptState(String),
    #[error("no column family named {0:?}")]
    UnknownColumnFamily(String),
}

pub type Result<T> = std::result::Result<T, Error>;
