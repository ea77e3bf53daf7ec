//! Where backup objects live. A small blocking interface, so the backup logic does not
//! care whether objects are files or remote blobs: an object is written whole (a reader
//! never sees half of one), read as a stream, listed by prefix and deleted.
//!
//! Built in: [`LocalStore`] (a directory; `file:///dir` or a plain path) and
//! [`crate::remote::RemoteStore`] (`s3://`, `gs://`, `az://`).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Object keys are relative, `/`-separated paths such as `backups/<id>/manifest.json`.
pub trait ObjectStore: Send + Sync {
    /// Writes object `key` from what `fill` writes; the object appears only if `fill`
    /// and the write succeed. Returns the stored size.
    fn put(&self, key: &str, fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>) -> io::Result<u64>;
    /// Opens object `key`; a missing object is `ErrorKind::NotFound`.
    fn get(&self, key: &str) -> io::Result<Box<dyn Read + Send>>;
    /// Keys of every object whose key starts with `prefix`, sorted.
    fn list(&self, prefix: &str) -> io::Result<Vec<String>>;
    /// Deletes object `key`; deleting a missing object is not an error.
    fn delete(&self, key: &str) -> io::Result<()>;
}

/// Objects as files under a root directory; writes go to a temporary file that is
/// fsynced and renamed into place.
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: &Path) -> io::Result<LocalStore> {
        std::fs::create_dir_all(root)?;
        Ok(LocalStore { root: root.to_path_buf() })
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        check_key(key).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(key.split('/').fold(self.root.clone(), |path, part| path.join(part)))
    }
}

/// Keys come from manifests, which come from outside: a key never leaves the root.
pub(crate) fn check_key(key: &str) -> Result<(), String> {
    match key.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        true => Err(format!("invalid object key {key:?}")),
        false => Ok(()),
    }
}

impl ObjectStore for LocalStore {
    fn put(&self, key: &str, fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>) -> io::Result<u64> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{}.partial", uuid::Uuid::new_v4().simple()));
        let result = (|| {
            let file = std::fs::File::create(&tmp)?;
            let mut out = io::BufWriter::with_capacity(1 << 20, file);
            fill(&mut out)?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            let size = file.metadata()?.len();
            std::fs::rename(&tmp, &path)?;
            Ok(size)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn get(&self, key: &str) -> io::Result<Box<dyn Read + Send>> {
        let file = std::fs::File::open(self.path(key)?)?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, file)))
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut pending = vec![(self.root.clone(), String::new())];
        while let Some((dir, key_prefix)) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let key = format!("{key_prefix}{name}");
                if entry.file_type()?.is_dir() {
                    // Descend only where keys can still match the prefix.
                    let dir_key = format!("{key}/");
                    if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                        pending.push((entry.path(), dir_key));
                    }
                } else if key.starts_with(prefix) {
                    keys.push(key);
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(key)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path()).expect("store");
        let size = store.put("a/b/c.txt", &mut |w| w.write_all(b"hello")).expect("put");
        assert_eq!(size, 5);
        store.put("a/d.txt", &mut |w| w.write_all(b"x")).expect("put");
        let failed = store.put("a/e.txt", &mut |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("interrupted"))
        });
        assert!(failed.is_err());
        assert_eq!(store.list("a/").expect("list"), vec!["a/b/c.txt".to_string(), "a/d.txt".to_string()]);
        assert_eq!(store.list("a/b").expect("list"), vec!["a/b/c.txt".to_string()]);
        let mut text = String::new();
        store.get("a/b/c.txt").expect("get").read_to_string(&mut text).expect("read");
        assert_eq!(text, "hello");
        store.delete("a/b/c.txt").expect("delete");
        store.delete("a/b/c.txt").expect("deleting twice is fine");
        assert_eq!(store.get("a/b/c.txt").err().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
        assert!(store.get("../escape").is_err());
    }
}
