//! What every server holds, for `sfs fsck`: every metadata entry, and per
//! server the files it has chunks of or records as written to the object
//! back end. The caller compares them with the back end's objects.

use crate::Client;
use sfs_global::holdings::Held;
use sfs_global::{FileId, Metadata, SfsResult};

/// Files per `Holdings` request.
const HOLDINGS_PAGE: u32 = 16_384;

/// Every entry and every server's holdings.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    /// Every entry of the namespace, `/` included, by path.
    pub entries: Vec<(String, Metadata)>,
    /// Per server (hostfile order), the files it holds something of.
    pub held: Vec<Vec<Held>>,
}

impl Client {
    /// Takes the inventory. Holdings are listed *before* the entries: a
    /// file created meanwhile then has an entry and maybe no holdings
    /// (never reported), whereas holdings without an entry come only from
    /// files removed (or removing) before the entries were listed.
    pub fn inventory(&self) -> SfsResult<Inventory> {
        self.block_on(async {
            let mut held = Vec::with_capacity(self.servers.len());
            for server in 0..self.servers.len() {
                held.push(self.holdings(server).await?);
            }
            let mut entries = self.list_subtree("/").await?;
            entries.push(("/".to_string(), self.lookup("/").await?));
            Ok(Inventory { entries, held })
        })
    }

    async fn holdings(&self, server: usize) -> SfsResult<Vec<Held>> {
        let handle = self.server(server).await?;
        let mut all: Vec<Held> = Vec::new();
        loop {
            let after = all.last().map(|h| h.id);
            let (page, more) = handle.holdings(after, HOLDINGS_PAGE).await?;
            let before = all.len();
            all.extend(page);
            if !more || all.len() == before {
                return Ok(all);
            }
        }
    }

    /// Removes every chunk of `id` that server `server` holds (and the
    /// object, if that server wrote some of it back): `sfs fsck --repair`
    /// of chunks no entry refers to.
    pub fn remove_chunks_on(&self, server: usize, id: FileId) -> SfsResult<()> {
        self.block_on(async { self.server(server).await?.remove_chunks(id).await })
    }
}
