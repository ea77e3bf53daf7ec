//! The manifest: one versioned JSON document per backup, written last, so a backup
//! without a manifest (interrupted) is invisible.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The newest manifest format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// How each stored file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
    None,
}

impl Compression {
    /// Suffix of stored objects in this compression.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => ".zst",
            Compression::Gzip => ".gz",
            Compression::None => "",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Compression> {
        match s {
            "zstd" => Ok(Compression::Zstd),
            "gzip" => Ok(Compression::Gzip),
            "none" => Ok(Compression::None),
            other => Err(Error::Invalid(format!("unknown compression {other:?}: use zstd, gzip or none"))),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        })
    }
}

/// What one backup holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// Sortable by time: `YYYYMMDDTHHMMSSZ-xxxxxx`.
    pub id: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub created_at_unix_ms: u64,
    pub node_id: u64,
    pub cluster_id: String,
    /// Compression of the files this backup uploaded (reused ones keep their own).
    pub compression: Compression,
    /// The applied Raft index of every group in the checkpoint (0 = metadata group).
    pub groups: Vec<GroupApplied>,
    /// Every file of the RocksDB checkpoint, in name order.
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupApplied {
    pub group: u64,
    pub applied_index: u64,
    pub applied_term: u64,
}

/// One file of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name inside the RocksDB directory.
    pub name: String,
    /// Uncompressed size in bytes.
    pub size: u64,
    /// CRC32 (IEEE) of the uncompressed bytes.
    pub crc32: u32,
    pub compression: Compression,
    /// Object key relative to the backup location.
    pub object: String,
    /// Size of the stored (compressed) object.
    pub stored_size: u64,
    /// The backup that uploaded the object: this one, or an earlier one it refers to.
    pub uploaded_by: String,
}

impl Manifest {
    /// Files this backup uploaded itself (the rest refer to earlier backups' objects).
    pub fn uploaded(&self) -> impl Iterator<Item = &FileEntry> {
        self.files.iter().filter(move |f| f.uploaded_by == self.id)
    }

    /// Uncompressed bytes of the whole checkpoint.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Stored bytes of all objects this backup uses.
    pub fn stored_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.stored_size).sum()
    }

    /// Stored bytes this backup uploaded.
    pub fn uploaded_bytes(&self) -> u64 {
        self.uploaded().map(|f| f.stored_size).sum()
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Plain data: serialization cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses a manifest, refusing formats newer than this code understands.
    pub fn from_json(object: &str, bytes: &[u8]) -> Result<Manifest> {
        let bad = |detail: String| Error::BadManifest { object: object.to_string(), detail };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let version = value.get("format_version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version == 0 || version > u64::from(FORMAT_VERSION) {
            return Err(bad(format!("format version {version}; this chronik reads versions 1 to {FORMAT_VERSION}")));
        }
        serde_json::from_value(value).map_err(|e| bad(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            id: "20261130T000000Z-abcdef".into(),
            created_at: "2026-11-30T00:00:00Z".into(),
            created_at_unix_ms: 1,
            node_id: 1,
            cluster_id: "c".into(),
            compression: Compression::Zstd,
            groups: vec![GroupApplied { group: 0, applied_index: 5, applied_term: 2 }],
            files: vec![FileEntry {
                name: "000001.sst".into(),
                size: 10,
                crc32: 7,
                compression: Compression::Zstd,
                object: "backups/x/files/000001.sst.zst".into(),
                stored_size: 4,
                uploaded_by: "20261130T000000Z-abcdef".into(),
            }],
        }
    }

    #[test]
    fn round_trips_and_refuses_newer_formats() {
        let manifest = sample();
        assert_eq!(Manifest::from_json("m", &manifest.to_json()).expect("parse"), manifest);
        let mut newer: serde_json::Value = serde_json::from_slice(&manifest.to_json()).expect("json");
        newer["format_version"] = 2.into();
        let err = Manifest::from_json("m.json", newer.to_string().as_bytes()).expect_err("newer");
        assert!(err.to_string().contains("m.json") && err.to_string().contains("format version 2"), "{err}");
        assert_eq!(manifest.uploaded().count(), 1);
        assert_eq!((manifest.total_bytes(), manifest.uploaded_bytes()), (10, 4));
    }

    #[test]
    fn compression_names() {
        for c in [Compression::Zstd, Compression::Gzip, Compression::None] {
            assert_eq!(c.to_string().parse::<Compression>().expect("parse"), c);
        }
        assert!("lz4".parse::<Compression>().is_err());
    }
}
