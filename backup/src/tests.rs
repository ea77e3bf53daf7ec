//! Backups of a real RocksDB store to a real local-filesystem object store.

use chronik_engine::{Durability, PartitionState};

use super::*;

fn engine_with(dir: &Path, batches: &[(u64, i64, &[u8])]) -> Engine {
    let engine = Engine::open(dir).expect("open");
    write(&engine, batches);
    engine
}

fn write(engine: &Engine, batches: &[(u64, i64, &[u8])]) {
    let mut wb = engine.batch();
    wb.put_meta(keys::META_NODE_ID, &7u64.to_be_bytes());
    wb.put_meta(keys::META_CLUSTER_ID, b"cluster-x");
    for (uid, base, data) in batches {
        wb.put_batch(*uid, *base, data);
        let state = PartitionState { applied_index: *base as u64 + 10, applied_term: 3, ..Default::default() };
        wb.put_partition_state(*uid, &state);
    }
    // Memtable only, like an apply write: the checkpoint must still hold it.
    engine.write(wb, Durability::Memtable).expect("write");
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: BackupStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let store = BackupStore::open(root.join("store").to_str().expect("utf-8")).expect("store");
    Fixture { _dir: dir, root, store }
}

fn backup(f: &Fixture, engine: &Engine, compression: Compression) -> Manifest {
    f.store.create(engine, &f.root.join("scratch"), compression, &NoProgress).expect("create")
}

#[test]
fn create_list_verify_restore_for_every_compression() {
    let f = fixture();
    let value = vec![b'v'; 100_000];
    let engine = engine_with(&f.root.join("db"), &[(1, 0, &value), (2, 5, b"small")]);
    for (i, compression) in [Compression::Zstd, Compression::Gzip, Compression::None].into_iter().enumerate() {
        let manifest = backup(&f, &engine, compression);
        assert_eq!((manifest.node_id, manifest.cluster_id.as_str()), (7, "cluster-x"));
        let groups: Vec<_> = manifest.groups.iter().map(|g| (g.group, g.applied_index, g.applied_term)).collect();
        assert_eq!(groups, vec![(1, 10, 3), (2, 15, 3)]);
        assert!(manifest.files.iter().any(|file| file.name.starts_with("MANIFEST-")));
        assert!(manifest.files.iter().all(|file| !file.name.starts_with("LOG")));
        assert_eq!(f.store.list().expect("list").len(), i + 1);
        f.store.verify(&manifest.id, &NoProgress).expect("verify");

        let target = f.root.join(format!("restored-{compression}"));
        f.store.restore(&manifest.id, &target, &NoProgress).expect("restore");
        let restored = Engine::open_read_only(&target).expect("open restored");
        assert_eq!(restored.stored_batch(1, 0).expect("read"), Some(value.clone()));
        assert_eq!(restored.stored_batch(2, 5).expect("read"), Some(b"small".to_vec()));
    }
    // The checkpoints were removed after upload.
    assert_eq!(std::fs::read_dir(f.root.join("scratch")).expect("scratch").count(), 0);
}

#[test]
fn a_second_backup_uploads_only_new_files_and_prune_keeps_what_is_referenced() {
    let f = fixture();
    let engine = engine_with(&f.root.join("db"), &[(1, 0, &[1u8; 50_000])]);
    let first = backup(&f, &engine, Compression::Zstd);
    assert_eq!(first.uploaded().count(), first.files.len(), "the first backup uploads everything");
    write(&engine, &[(1, 1, b"a little more")]);
    let second = backup(&f, &engine, Compression::Zstd);

    let old_ssts: BTreeSet<_> = first.files.iter().filter(|x| x.name.ends_with(".sst")).map(|x| &x.name).collect();
    assert!(!old_ssts.is_empty());
    for file in &second.files {
        if old_ssts.contains(&file.name) {
            assert_eq!(file.uploaded_by, first.id, "{} is referred to, not uploaded again", file.name);
        }
    }
    let new_ssts: Vec<_> = second.uploaded().filter(|x| x.name.ends_with(".sst")).collect();
    assert!(!new_ssts.is_empty(), "the flush of the new write made a new SST");
    assert!(new_ssts.iter().all(|x| !old_ssts.contains(&x.name)));

    let pruned = f.store.prune(1).expect("prune");
    assert_eq!(pruned.backups, vec![first.id.clone()]);
    assert!(pruned.objects > 0, "the first backup's MANIFEST and OPTIONS files are no longer needed");
    assert!(matches!(f.store.manifest(&first.id), Err(Error::NotFound { .. })));
    // The second backup still restores: the SSTs it shares with the first were kept.
    f.store.verify(&second.id, &NoProgress).expect("verify after prune");
    let target = f.root.join("restored");
    f.store.restore(&second.id, &target, &NoProgress).expect("restore");
    assert_eq!(
        Engine::open_read_only(&target).expect("open").stored_batch(1, 1).expect("read"),
        Some(b"a little more".to_vec())
    );
}

#[test]
fn a_flipped_byte_or_a_missing_object_is_reported_by_file_name() {
    let f = fixture();
    let engine = engine_with(&f.root.join("db"), &[(1, 0, &[9u8; 20_000])]);
    for compression in [Compression::Zstd, Compression::None] {
        let manifest = backup(&f, &engine, compression);
        let victim = manifest.files.iter().find(|x| x.name.ends_with(".sst")).expect("an sst");
        let object = f.root.join("store").join(&victim.object);
        let mut bytes = std::fs::read(&object).expect("read object");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&object, &bytes).expect("corrupt");
        let err = f.store.verify(&manifest.id, &NoProgress).expect_err("corrupt");
        assert!(matches!(err, Error::Corrupt { ref file, .. } if *file == victim.name), "{compression}: {err}");
        assert!(err.to_string().contains(&victim.name));
        let target = f.root.join(format!("never-{compression}"));
        assert!(f.store.restore(&manifest.id, &target, &NoProgress).is_err());

        std::fs::remove_file(&object).expect("remove");
        let err = f.store.verify(&manifest.id, &NoProgress).expect_err("missing");
        assert!(matches!(err, Error::Missing { ref file, .. } if *file == victim.name), "{err}");
    }
    assert!(matches!(f.store.manifest("nope"), Err(Error::NotFound { .. })));
}

#[test]
fn bad_locations_are_named() {
    for bad in ["ftp://host/x", "s3://", "gs:///x", "az://c/../x", "file://relative"] {
        let err = BackupStore::open(bad).err().expect("refused");
        assert!(err.to_string().contains(bad), "{err}");
    }
}
