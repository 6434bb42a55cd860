//! A namespace that outlives the job: one server's part of writing the
//! namespace into the object back end (`sfs checkpoint`, `sfs stop
//! --flush`) and of reading it back at start (`sfs start --restore`).
//!
//! The format and the reserved object ids are
//! [`sfs_global::checkpoint`]'s. A checkpoint has two steps, driven by the
//! client: every server [`dump`]s (writes back every dirty file, then
//! writes the entries it owns as one object), and once all of them
//! succeeded one server [`commit`]s (writes the manifest naming the dumps,
//! then deletes the previous checkpoint's dumps). A checkpoint that fails
//! half-way changes nothing a restore would read: the previous manifest
//! still names the previous dumps.
//!
//! A [`restore`]d server reads every dump and keeps the entries whose paths
//! it owns under the *new* hostfile, so the server count may change; it
//! records every restored file as held by the back end, so each chunk is
//! fetched from the file's object on its first read, by whichever server
//! now owns that chunk.

use crate::backend::ObjectBackend;
use crate::meta_store::{now_ns, MetadataStore};
use crate::tier::TieredStore;
use sfs_global::checkpoint::{
    decode_dump, dump_object, manifest_slot, DumpWriter, Manifest, MANIFEST_SLOTS,
};
use sfs_global::distributor::Distributor;
use sfs_global::{Errno, FileId, FileKind, Metadata, SfsError, SfsResult};
use std::sync::Arc;

/// Dumps and manifests move through the back end in pieces this large.
const PIECE_BYTES: usize = 8 << 20;

/// Entries read from the metadata store per scan.
const SCAN_PAGE: usize = 4096;

/// What one server's dump holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dumped {
    pub entries: u64,
    pub files: u64,
    pub file_bytes: u64,
    /// Bytes this server wrote back first.
    pub written_back_bytes: u64,
    pub dump_bytes: u64,
}

/// Every entry of `meta`: the root (if held here) and everything below it.
fn all_entries(meta: &dyn MetadataStore) -> SfsResult<Vec<(String, Metadata)>> {
    let mut out = Vec::new();
    if let Some(root) = meta.get("/")? {
        out.push(("/".to_string(), root));
    }
    let mut after: Option<String> = None;
    loop {
        let page = meta.subtree("/", after.as_deref(), SCAN_PAGE)?;
        let full = page.len() == SCAN_PAGE;
        after = page.last().map(|(path, _)| path.clone());
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// The valid manifest with the highest generation, if any.
pub async fn current_manifest(backend: &dyn ObjectBackend) -> SfsResult<Option<Manifest>> {
    let mut best: Option<Manifest> = None;
    for slot in MANIFEST_SLOTS {
        let bytes = match backend.read(slot, 0, 64 << 10).await {
            Ok(bytes) => bytes,
            Err(e) if e.errno == Errno::ENOENT => continue,
            Err(e) => return Err(e),
        };
        match Manifest::decode(&bytes) {
            Ok(m) if best.as_ref().is_none_or(|b| m.generation > b.generation) => best = Some(m),
            Ok(_) => {}
            // A slot torn by a crash mid-commit: the other one stands.
            Err(e) => tracing::warn!("checkpoint: manifest slot {slot} ignored: {}", e.message),
        }
    }
    Ok(best)
}

/// Writes `bytes` as the whole of object `id` (anything there before is
/// removed first, so no stale tail survives) and persists it.
async fn put_object(backend: &dyn ObjectBackend, id: FileId, bytes: &[u8]) -> SfsResult<()> {
    backend.delete(id).await?;
    backend.create(id).await?;
    for (i, piece) in bytes.chunks(PIECE_BYTES).enumerate() {
        backend.write(id, (i * PIECE_BYTES) as u64, piece).await?;
    }
    backend.persist(id).await
}

/// Reads the whole of object `id`.
async fn get_object(backend: &dyn ObjectBackend, id: FileId) -> SfsResult<Vec<u8>> {
    let size = backend
        .stat(id)
        .await?
        .ok_or_else(|| SfsError::new(Errno::ENOENT, format!("object {id} is missing")))?
        .size;
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    while (out.len() as u64) < size {
        let piece = backend.read(id, out.len() as u64, PIECE_BYTES).await?;
        if piece.is_empty() {
            break;
        }
        out.extend_from_slice(&piece);
    }
    Ok(out)
}

/// This server's half of a checkpoint: writes back every dirty file, then
/// writes the entries it owns as the dump `(sequence, server)`.
pub async fn dump(
    meta: Arc<dyn MetadataStore>,
    tier: &Arc<TieredStore>,
    sequence: u32,
    server: u32,
    servers: u32,
) -> SfsResult<Dumped> {
    if sequence == 0 {
        return Err(SfsError::invalid("checkpoint sequence 0 is reserved"));
    }
    let backend = tier.backend().clone();
    if current_manifest(backend.as_ref())
        .await?
        .is_some_and(|m| m.sequence == sequence)
    {
        // Its dumps are the committed ones: overwriting them would break
        // the checkpoint a restore reads. The caller picks another number.
        return Err(SfsError::new(
            Errno::EEXIST,
            format!("checkpoint {sequence} is the committed one; choose another sequence number"),
        ));
    }
    let written_back = tier.write_back_all().await?;
    let encoded = tokio::task::spawn_blocking(move || {
        meta.sync()?;
        let mut writer = DumpWriter::new(sequence, server, servers);
        let mut dumped = Dumped::default();
        for (path, entry) in all_entries(meta.as_ref())? {
            if entry.kind() == FileKind::File {
                dumped.files += 1;
                dumped.file_bytes += entry.size;
            }
            dumped.entries += 1;
            writer.push(&path, &entry);
        }
        Ok::<_, SfsError>((writer.finish(), dumped))
    })
    .await
    .map_err(|e| SfsError::io(format!("checkpoint: dump worker failed: {e}")))?;
    let (bytes, mut dumped) = encoded?;
    put_object(backend.as_ref(), dump_object(sequence, server), &bytes).await?;
    dumped.written_back_bytes = written_back.bytes;
    dumped.dump_bytes = bytes.len() as u64;
    tracing::info!(
        "checkpoint {sequence}: server {server} wrote {} entries ({} bytes) after writing back {} bytes",
        dumped.entries,
        dumped.dump_bytes,
        written_back.bytes
    );
    Ok(dumped)
}

/// Commits a checkpoint whose dumps every server wrote: persists its
/// manifest in the slot the committed one does not use, then deletes the
/// dumps of the checkpoint it replaces.
pub async fn commit(backend: &dyn ObjectBackend, manifest: &Manifest) -> SfsResult<()> {
    let previous = current_manifest(backend).await?;
    if let Some(p) = &previous {
        if p.sequence == manifest.sequence {
            return Err(SfsError::new(
                Errno::EEXIST,
                format!("checkpoint {} is already committed", p.sequence),
            ));
        }
    }
    for server in 0..manifest.servers {
        if backend
            .stat(dump_object(manifest.sequence, server))
            .await?
            .is_none()
        {
            return Err(SfsError::io(format!(
                "checkpoint {}: server {server} wrote no dump; nothing committed",
                manifest.sequence
            )));
        }
    }
    let mut manifest = manifest.clone();
    manifest.created_ns = now_ns();
    manifest.generation = previous.as_ref().map_or(1, |p| p.generation + 1);
    put_object(
        backend,
        manifest_slot(manifest.generation),
        &manifest.encode(),
    )
    .await?;
    if let Some(p) = previous {
        for server in 0..p.servers {
            if let Err(e) = backend.delete(dump_object(p.sequence, server)).await {
                tracing::warn!(
                    "checkpoint: the replaced checkpoint {}'s dump of server {server} stays: {}",
                    p.sequence,
                    e.message
                );
            }
        }
    }
    tracing::info!(
        "checkpoint {} committed: {} entries from {} servers",
        manifest.sequence,
        manifest.entries,
        manifest.servers
    );
    Ok(())
}

/// What a restore put in place on this server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub sequence: u32,
    pub entries: u64,
    pub files_in_backend: u64,
}

/// Fills an empty metadata store with the entries of the committed
/// checkpoint that `index` of `count` servers owns, and tells the tier that
/// every file of the checkpoint lives in the back end.
pub async fn restore(
    meta: Arc<dyn MetadataStore>,
    tier: &Arc<TieredStore>,
    index: usize,
    count: usize,
) -> SfsResult<Restored> {
    let backend = tier.backend().clone();
    let manifest = current_manifest(backend.as_ref()).await?.ok_or_else(|| {
        SfsError::new(
            Errno::ENOENT,
            format!(
                "the {} back end holds no checkpoint (write one with `sfs stop --flush` or `sfs checkpoint`)",
                backend.kind()
            ),
        )
    })?;
    {
        let meta = meta.clone();
        let empty = tokio::task::spawn_blocking(move || {
            Ok::<_, SfsError>(meta.get("/")?.is_none() && meta.subtree("/", None, 1)?.is_empty())
        })
        .await
        .map_err(|e| SfsError::io(format!("restore: worker failed: {e}")))??;
        if !empty {
            return Err(SfsError::new(
                Errno::EEXIST,
                "this server's metadata store is not empty: restore only into a fresh rootdir (`sfs clean`, or remove the server's directory)",
            ));
        }
    }
    let distributor = Distributor::new(count);
    let mut restored = Restored {
        sequence: manifest.sequence,
        ..Restored::default()
    };
    let mut in_backend = Vec::new();
    for server in 0..manifest.servers {
        let id = dump_object(manifest.sequence, server);
        let bytes = get_object(backend.as_ref(), id).await.map_err(|e| {
            SfsError::new(
                e.errno,
                format!(
                    "checkpoint {}: dump of server {server}: {}",
                    manifest.sequence, e.message
                ),
            )
        })?;
        let (header, records) = decode_dump(&bytes)?;
        if header.sequence != manifest.sequence || header.server != server {
            return Err(SfsError::io(format!(
                "checkpoint {}: object {id} holds the dump of checkpoint {} server {}",
                manifest.sequence, header.sequence, header.server
            )));
        }
        let mine: Vec<(String, Metadata)> = records
            .into_iter()
            .inspect(|(_, entry)| {
                if entry.kind() == FileKind::File && entry.size > 0 {
                    in_backend.push(entry.id);
                }
            })
            .filter(|(path, _)| distributor.metadata_server(path) == index)
            .collect();
        restored.entries += mine.len() as u64;
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || {
            for (path, entry) in mine {
                meta.create(&path, entry, true)?;
            }
            Ok::<_, SfsError>(())
        })
        .await
        .map_err(|e| SfsError::io(format!("restore: worker failed: {e}")))??;
    }
    restored.files_in_backend = in_backend.len() as u64;
    let (tier, meta) = (tier.clone(), meta.clone());
    tokio::task::spawn_blocking(move || {
        tier.adopt_backend_files(&in_backend)?;
        meta.sync()
    })
    .await
    .map_err(|e| SfsError::io(format!("restore: worker failed: {e}")))??;
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::dir::DirBackend;

    fn manifest(sequence: u32, servers: u32) -> Manifest {
        Manifest {
            generation: 0,
            sequence,
            servers,
            entries: 1,
            files: 0,
            file_bytes: 0,
            created_ns: 0,
        }
    }

    async fn dumped(backend: &dyn ObjectBackend, sequence: u32, servers: u32) {
        for server in 0..servers {
            let dump = DumpWriter::new(sequence, server, servers).finish();
            put_object(backend, dump_object(sequence, server), &dump)
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn the_newest_valid_manifest_wins_and_a_torn_one_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let backend = DirBackend::open(dir.path()).unwrap();
        assert_eq!(current_manifest(&backend).await.unwrap(), None);
        // Sequence numbers are random: a later checkpoint may have a
        // smaller one, and two in a row may share a parity.
        for (sequence, generation) in [(900, 1), (7, 2), (11, 3)] {
            dumped(&backend, sequence, 2).await;
            commit(&backend, &manifest(sequence, 2)).await.unwrap();
            let now = current_manifest(&backend).await.unwrap().unwrap();
            assert_eq!((now.sequence, now.generation), (sequence, generation));
        }
        // The replaced checkpoints' dumps are gone, the current ones stay.
        for (sequence, present) in [(900, false), (7, false), (11, true)] {
            for server in 0..2 {
                let id = dump_object(sequence, server);
                assert_eq!(backend.stat(id).await.unwrap().is_some(), present);
            }
        }
        // A crash while the newest manifest is written: the one before it
        // stands (its dumps are the ones the newest would have deleted only
        // after it was complete).
        backend.write(manifest_slot(3), 10, b"torn").await.unwrap();
        let now = current_manifest(&backend).await.unwrap().unwrap();
        assert_eq!((now.sequence, now.generation), (7, 2));
    }

    #[tokio::test]
    async fn a_checkpoint_with_a_missing_dump_or_a_reused_number_is_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let backend = DirBackend::open(dir.path()).unwrap();
        dumped(&backend, 5, 3).await;
        backend.delete(dump_object(5, 1)).await.unwrap();
        let e = commit(&backend, &manifest(5, 3)).await.unwrap_err();
        assert!(e.message.contains("server 1 wrote no dump"), "{e}");
        assert_eq!(current_manifest(&backend).await.unwrap(), None);
        dumped(&backend, 5, 3).await;
        commit(&backend, &manifest(5, 3)).await.unwrap();
        let e = commit(&backend, &manifest(5, 3)).await.unwrap_err();
        assert_eq!(e.errno, Errno::EEXIST);
    }
}
