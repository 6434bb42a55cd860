//! `sfs fsck [--repair]`: the object back end and every server's chunk
//! store checked against the namespace (the storage brick's "list mapped
//! ids" at recovery).
//!
//! Problems, each a line naming what and where:
//! - **orphan object**: an object no entry's file id names (a file removed
//!   while a server that held its object was down, a crash between an
//!   unlink and the object's delete); `--repair` deletes it.
//! - **stale checkpoint object**: a reserved object that neither manifest
//!   slot nor the committed checkpoint's dumps are (a checkpoint that
//!   failed half-way); `--repair` deletes it.
//! - **orphan chunks**: chunks a server holds of a file no entry names;
//!   `--repair` removes them on that server.
//! - **missing object**: a server records that the back end holds a file's
//!   object, and it does not: chunks of it that were evicted are lost.
//!   Nothing can repair that; the file's path is named.
//! - **missing checkpoint dump**: the committed checkpoint names a dump the
//!   back end does not have: a restore would fail.
//!
//! Run it on a quiet job: a file created or removed while fsck lists may be
//! reported (holdings are listed before entries, so a file created
//! meanwhile never is; one being removed may show as orphan chunks, which a
//! repair removes as the unlink would have).

use crate::Setup;
use anyhow::{Context, Result};
use sfs_client::{Client, FileId, FileKind};
use sfs_global::checkpoint::{dump_object, MANIFEST_SLOTS};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One problem found, and whether `--repair` can remove it.
enum Problem {
    OrphanObject {
        id: FileId,
        size: u64,
    },
    StaleCheckpointObject {
        id: FileId,
    },
    OrphanChunks {
        server: usize,
        id: FileId,
        chunks: u64,
    },
    MissingObject {
        path: String,
        id: FileId,
    },
    MissingDump {
        sequence: u32,
        server: u32,
    },
}

impl Problem {
    fn repairable(&self) -> bool {
        matches!(
            self,
            Problem::OrphanObject { .. }
                | Problem::StaleCheckpointObject { .. }
                | Problem::OrphanChunks { .. }
        )
    }

    fn describe(&self, servers: &[String]) -> String {
        match self {
            Problem::OrphanObject { id, size } => {
                format!("orphan object {id} ({size} bytes): no entry names it")
            }
            Problem::StaleCheckpointObject { id } => format!(
                "stale checkpoint object {id}: not part of the committed checkpoint"
            ),
            Problem::OrphanChunks { server, id, chunks } => format!(
                "orphan chunks: server {} holds {chunks} chunks of {id}, which no entry names",
                servers[*server]
            ),
            Problem::MissingObject { path, id } => format!(
                "missing object: {path} (file {id}) was written to the back end, which has no object for it; its evicted chunks are lost"
            ),
            Problem::MissingDump { sequence, server } => format!(
                "missing checkpoint dump: the committed checkpoint {sequence} lacks server {server}'s dump; `sfs start --restore` would fail"
            ),
        }
    }
}

pub fn fsck(setup: &Setup, repair: bool) -> Result<()> {
    let client = Client::new(setup.config.clone(), setup.hostfile.clone())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let backend = runtime
        .block_on(sfs_server::backend::open(&setup.config))
        .context("opening the object back end (config `backend`)")?;
    // Objects first, then holdings, then entries: whatever appears while
    // fsck lists is newer than the listing that would miss it.
    let (objects, checkpoint): (HashMap<FileId, u64>, _) = runtime
        .block_on(async {
            let mut sizes = HashMap::new();
            for id in backend.list().await? {
                let size = backend.stat(id).await?.map_or(0, |s| s.size);
                sizes.insert(id, size);
            }
            let manifest = sfs_server::checkpoint::current_manifest(backend.as_ref()).await?;
            Ok::<_, sfs_global::SfsError>((sizes, manifest))
        })
        .context("listing the object back end")?;
    let inventory = client.inventory().context("listing the servers")?;
    let servers: Vec<String> = setup
        .hostfile
        .hosts
        .iter()
        .map(|h| h.name.clone())
        .collect();

    let live: HashMap<FileId, &str> = inventory
        .entries
        .iter()
        .filter(|(_, md)| md.kind() == FileKind::File)
        .map(|(path, md)| (md.id, path.as_str()))
        .collect();
    let mut problems = Vec::new();
    let mut expected_reserved: HashSet<FileId> = MANIFEST_SLOTS.into_iter().collect();
    if let Some(m) = &checkpoint {
        for server in 0..m.servers {
            let id = dump_object(m.sequence, server);
            expected_reserved.insert(id);
            if !objects.contains_key(&id) {
                problems.push(Problem::MissingDump {
                    sequence: m.sequence,
                    server,
                });
            }
        }
    }
    let mut sorted: BTreeMap<FileId, u64> = BTreeMap::new();
    sorted.extend(objects.iter().map(|(&id, &size)| (id, size)));
    for (&id, &size) in &sorted {
        if id.is_reserved() {
            if !expected_reserved.contains(&id) {
                problems.push(Problem::StaleCheckpointObject { id });
            }
        } else if !live.contains_key(&id) {
            problems.push(Problem::OrphanObject { id, size });
        }
    }
    let mut missing_reported = HashSet::new();
    for (server, held) in inventory.held.iter().enumerate() {
        for h in held {
            match live.get(&h.id) {
                None if h.chunks > 0 => problems.push(Problem::OrphanChunks {
                    server,
                    id: h.id,
                    chunks: h.chunks,
                }),
                Some(path)
                    if h.in_backend
                        && !objects.contains_key(&h.id)
                        && missing_reported.insert(h.id) =>
                {
                    problems.push(Problem::MissingObject {
                        path: path.to_string(),
                        id: h.id,
                    })
                }
                _ => {}
            }
        }
    }

    for p in &problems {
        outln!("{}", p.describe(&servers))?;
    }
    let mut repaired = 0;
    if repair {
        for p in problems.iter().filter(|p| p.repairable()) {
            let done = match p {
                Problem::OrphanObject { id, .. } | Problem::StaleCheckpointObject { id } => {
                    runtime.block_on(backend.delete(*id))
                }
                Problem::OrphanChunks { server, id, .. } => client.remove_chunks_on(*server, *id),
                _ => unreachable!("filtered to repairable problems"),
            };
            match done {
                Ok(()) => repaired += 1,
                Err(e) => eprintln!("repair failed: {}: {e}", p.describe(&servers)),
            }
        }
    }
    let repairable = problems.iter().filter(|p| p.repairable()).count();
    outln!(
        "fsck: {} entries ({} files), {} objects, {} servers: {} problems{}",
        inventory.entries.len(),
        live.len(),
        objects.len(),
        servers.len(),
        problems.len(),
        if repair {
            format!(", {repaired} repaired")
        } else if repairable > 0 {
            format!(" ({repairable} removable with --repair)")
        } else {
            String::new()
        }
    )?;
    let left = problems.len() - repaired;
    if left > 0 {
        anyhow::bail!("{left} problems remain");
    }
    Ok(())
}
