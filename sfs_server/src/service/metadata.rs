//! The `Metadata` gRPC service: the namespace entries this server owns.
//!
//! Each handler validates its request, runs the store call (inline when it
//! is a point operation, on the blocking pool when it is long)
//! and maps the result to a message. Permissions are checked here against
//! the caller each request carries (`sfs_rpc::caller`) on the entries this
//! server owns: the entry itself, and the parent when it lives here too
//! (docs/semantics.md, "Permissions"). Cross-server rules (a parent must
//! exist, a directory must be empty on *every* server before rmdir, rename
//! spans two owners) are the client's: this server enforces what it alone can
//! see, atomically.

use super::{
    blocking, check_entry, check_link_target, check_mode, check_path, check_size, page_size, quick,
    ServerState,
};
use crate::meta_rocks::shared_elsewhere;
use crate::meta_store::{now_ns, MetadataStore, RemoveKind};
use sfs_global::access::{
    check_access, check_set_attr, check_sticky, check_xattr, missing, without_privileges,
    write_drops_privileges, AttrChange, Caller, MAY_EXEC, MAY_WRITE,
};
use sfs_global::distributor::Distributor;
use sfs_global::metadata::{MetaUpdate, XattrSet, SHARED_PREFIX, XATTR_SIZE_MAX};
use sfs_global::path::split_parent;
use sfs_global::{Errno, FileId, FileKind, Metadata, SfsError, SfsResult};
use sfs_rpc::methods::{MetadataHandlers, PageStream};
use sfs_rpc::pb;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Pages buffered ahead of a slow reader of a listing.
const PAGES_AHEAD: usize = 2;

/// Serves the `Metadata` service from the shared server state.
pub struct MetadataService {
    state: Arc<ServerState>,
}

impl MetadataService {
    pub fn new(state: Arc<ServerState>) -> Self {
        MetadataService { state }
    }

    /// Checks and counts a request naming one path, which this server must
    /// own: a client whose hostfile lists the servers in another order
    /// (which the `Hello` check should have caught) would otherwise leave
    /// an entry where no correctly configured client ever looks.
    fn accept(&self, path: &str) -> SfsResult<()> {
        self.accept_any(path)?;
        let owner = Distributor::new(self.state.count).metadata_server(path);
        if owner != self.state.index {
            return Err(SfsError::new(
                Errno::EREMOTE,
                format!(
                    "server {} does not own {path}: server {} of its hostfile does; \
                     the client's hostfile differs from the servers'",
                    self.state.name,
                    owner + 1
                ),
            ));
        }
        Ok(())
    }

    /// Checks and counts a request that goes to every server (listings,
    /// subtree scans): any server may be asked about any directory.
    fn accept_any(&self, path: &str) -> SfsResult<()> {
        self.state.served();
        check_path(path)
    }

    /// A listing streamed a page at a time (gRPC's `Readdir`,
    /// `ListSubtree`), each page made a message by `to_message`.
    fn stream_listing<P: Send + 'static>(
        &self,
        listing: Listing,
        req: pb::ReaddirRequest,
        to_message: impl Fn(Vec<(String, Metadata)>) -> P + Send + 'static,
    ) -> SfsResult<PageStream<P>> {
        self.accept_any(&req.dir)?;
        let limit = page_size(req.page_size, &self.state.config);
        let meta = self.state.meta.clone();
        let dir = req.dir;
        Ok(stream_pages(
            limit,
            move |after, limit| listing.page(meta.as_ref(), &dir, after, limit),
            to_message,
        ))
    }

    /// One page of a listing after `req.after` (`ReaddirPaged`,
    /// `ListSubtreePaged`), and whether more may follow.
    async fn listing_page(
        &self,
        listing: Listing,
        req: pb::ReaddirPageRequest,
    ) -> SfsResult<(Vec<(String, Metadata)>, bool)> {
        self.accept_any(&req.dir)?;
        if listing == Listing::Subtree && !req.after.is_empty() {
            // A subtree's cursor is a path (a directory's is a name).
            check_path(&req.after)?;
        }
        let limit = page_size(req.page_size, &self.state.config);
        let meta = self.state.meta.clone();
        let page = blocking(move || {
            let after = (!req.after.is_empty()).then_some(req.after.as_str());
            listing.page(meta.as_ref(), &req.dir, after, limit)
        })
        .await?;
        let more = page.len() == limit;
        Ok((page, more))
    }

    /// The parent check of a create or remove whose parent this server
    /// owns: the parent's entry when it is a directory.
    fn check_own_parent(&self, path: &str) -> SfsResult<ParentCheck> {
        let Some((parent, _)) = split_parent(path) else {
            return Err(SfsError::exists(path));
        };
        let owner = Distributor::new(self.state.count).metadata_server(parent);
        if owner != self.state.index {
            return Err(SfsError::invalid(format!(
                "create of {path} asks server {} to check a parent that server {owner} owns",
                self.state.index
            )));
        }
        let meta = self.state.meta.clone();
        let found = quick(move || meta.parent_entry(parent))?;
        match found {
            Some(md) if md.is_dir() => Ok(ParentCheck::Directory(md)),
            Some(md) if md.kind() == FileKind::Symlink => Ok(ParentCheck::Symlink),
            Some(_) => Err(SfsError::not_dir(parent)),
            None => Err(SfsError::not_found(parent)),
        }
    }
}

/// What a listing lists: a directory's entries, or every entry below it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listing {
    Children,
    Subtree,
}

impl Listing {
    fn page(
        self,
        meta: &dyn MetadataStore,
        dir: &str,
        after: Option<&str>,
        limit: usize,
    ) -> SfsResult<Vec<(String, Metadata)>> {
        match self {
            Listing::Children => meta.children(dir, after, limit),
            Listing::Subtree => meta.subtree(dir, after, limit),
        }
    }
}

/// What a server-side parent check found (failures are errors).
enum ParentCheck {
    Directory(Metadata),
    Symlink,
}

/// The parent directory of `path` (which has one: the caller checked).
fn parent_of(path: &str) -> &str {
    split_parent(path).map_or("/", |(parent, _)| parent)
}

/// A fresh random file id: ids are never reused, so a stale chunk of a
/// removed file can never be mistaken for a new file's data; never a
/// reserved one (those name the back end's checkpoint objects).
pub(crate) fn new_file_id() -> FileId {
    loop {
        let id = FileId(rand::random::<u128>());
        if !id.is_reserved() {
            return id;
        }
    }
}

/// Streams pages produced by `next_page(cursor)` until one comes back short.
/// Only one page is in memory at a time, however large the listing.
fn stream_pages<P>(
    limit: usize,
    next_page: impl Fn(Option<&str>, usize) -> SfsResult<Vec<(String, Metadata)>>
        + Send
        + Sync
        + 'static,
    to_message: impl Fn(Vec<(String, Metadata)>) -> P + Send + 'static,
) -> PageStream<P>
where
    P: Send + 'static,
{
    let (sender, receiver) = mpsc::channel(PAGES_AHEAD);
    let next_page = Arc::new(next_page);
    tokio::spawn(async move {
        let mut cursor: Option<String> = None;
        loop {
            let fetch = next_page.clone();
            let after = cursor.clone();
            let page = match blocking(move || fetch(after.as_deref(), limit)).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = sender.send(Err(e)).await;
                    return;
                }
            };
            let last_page = page.len() < limit;
            cursor = page.last().map(|(name, _)| name.clone());
            if !page.is_empty() && sender.send(Ok(to_message(page))).await.is_err() {
                return; // the client went away
            }
            if last_page {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

fn readdir_page(page: Vec<(String, Metadata)>, more: bool) -> pb::ReaddirPage {
    pb::ReaddirPage {
        entries: page
            .into_iter()
            .map(|(name, md)| pb::DirEntry {
                name,
                entry: Some(pb::Entry::from(&md)),
            })
            .collect(),
        more,
    }
}

fn subtree_page(page: Vec<(String, Metadata)>, more: bool) -> pb::SubtreePage {
    pb::SubtreePage {
        entries: page
            .into_iter()
            .map(|(path, md)| pb::SubtreeEntry {
                path,
                entry: Some(pb::Entry::from(&md)),
            })
            .collect(),
        more,
    }
}

impl MetadataHandlers for MetadataService {
    async fn create(
        &self,
        caller: Caller,
        req: pb::CreateRequest,
    ) -> SfsResult<pb::CreateResponse> {
        self.accept(&req.path)?;
        let kind = check_mode(req.mode)?;
        check_link_target(kind, &req.link_target)?;
        let mut entry = Metadata::new(kind, req.mode, new_file_id(), now_ns());
        entry.uid = caller.uid;
        entry.gid = caller.gid;
        entry.size = req.link_target.len() as u64;
        entry.link_target = req.link_target;
        if kind.is_device() && !caller.is_root() {
            return Err(sfs_global::SfsError::new(
                sfs_global::Errno::EPERM,
                format!("{}: only root makes device nodes", req.path),
            ));
        }
        if kind.is_device() {
            entry.size = req.rdev; // a device keeps its number there
        } else if req.rdev != 0 {
            return Err(sfs_global::SfsError::invalid(
                "only a device has a device number",
            ));
        }
        let meta = self.state.meta.clone();
        if req.check_parent {
            match self.check_own_parent(&req.path)? {
                ParentCheck::Directory(parent) => {
                    let parent_path = parent_of(&req.path);
                    check_access(&parent, &caller, MAY_EXEC, parent_path)?;
                    if missing(&parent, &caller, MAY_WRITE) != 0 {
                        // Without write permission on the parent only an
                        // existing entry may be opened (O_CREAT without
                        // O_EXCL); a new one is EACCES.
                        match quick(|| meta.get(&req.path))? {
                            Some(_) if req.exclusive => return Err(SfsError::exists(&req.path)),
                            Some(existing) => {
                                check_access_here(&existing, &caller, req.access, &req.path)?;
                                return Ok(pb::CreateResponse {
                                    entry: Some(pb::Entry::from(&existing)),
                                    created: false,
                                    parent_is_symlink: false,
                                });
                            }
                            None => check_access(&parent, &caller, MAY_WRITE, parent_path)?,
                        }
                    }
                }
                ParentCheck::Symlink => {
                    return Ok(pb::CreateResponse {
                        entry: None,
                        created: false,
                        parent_is_symlink: true,
                    })
                }
            }
        }
        let path = req.path;
        let (entry, created) = quick(|| meta.create(&path, entry, req.exclusive))?;
        if !created {
            // Opening what exists: the access asked for, as open(2).
            check_access_here(&entry, &caller, req.access, &path)?;
        }
        Ok(pb::CreateResponse {
            entry: Some(pb::Entry::from(&entry)),
            created,
            parent_is_symlink: false,
        })
    }

    async fn stat(&self, caller: Caller, req: pb::PathRequest) -> SfsResult<pb::Entry> {
        self.accept(&req.path)?;
        let if_id = req
            .check_id
            .then(|| FileId::from_parts(req.id_hi, req.id_lo));
        let path = req.path;
        let meta = self.state.meta.clone();
        let entry = quick(move || {
            let md = meta.get(&path)?.ok_or_else(|| SfsError::not_found(&path))?;
            if let Some(id) = if_id.filter(|id| md.id != *id) {
                return Err(crate::meta_rocks::stale(&path, id));
            }
            if md.is_name_of_shared() {
                // Its attributes, and so these checks, are the shared
                // entry's: the client asks there next.
                return Ok(md);
            }
            check_access(&md, &caller, req.access, &path)?;
            if let Some(parent_uid) = req.sticky_parent_uid {
                check_sticky(libc::S_ISVTX, parent_uid, md.uid, &caller, &path)?;
            }
            Ok(md)
        })?;
        Ok(pb::Entry::from(&entry))
    }

    async fn remove(&self, caller: Caller, req: pb::RemoveRequest) -> SfsResult<pb::Entry> {
        self.accept(&req.path)?;
        let kind = match pb::RemoveKind::try_from(req.kind) {
            Ok(pb::RemoveKind::RemoveNotDirectory) => RemoveKind::NotDirectory,
            Ok(pb::RemoveKind::RemoveDirectory) => RemoveKind::Directory,
            Err(_) => {
                return Err(SfsError::invalid(format!(
                    "unknown remove kind {}",
                    req.kind
                )))
            }
        };
        let mut if_id = req.if_id.then(|| FileId::from_parts(req.id_hi, req.id_lo));
        let mut sticky_parent_uid = req.sticky_parent_uid;
        if req.check_parent {
            let ParentCheck::Directory(parent) = self.check_own_parent(&req.path)? else {
                return Err(SfsError::not_dir(parent_of(&req.path)));
            };
            check_access(&parent, &caller, MAY_WRITE | MAY_EXEC, parent_of(&req.path))?;
            if parent.mode & libc::S_ISVTX != 0 {
                sticky_parent_uid = Some(parent.uid);
            }
        }
        let meta = self.state.meta.clone();
        if let Some(parent_uid) = sticky_parent_uid {
            // The sticky rule needs the entry's owner; the removal then
            // takes only the entry that was checked (by id).
            let path = req.path.as_str();
            let md = quick(|| meta.get(path)?.ok_or_else(|| SfsError::not_found(path)))?;
            if if_id.is_some_and(|id| id != md.id) {
                return Err(crate::meta_rocks::stale(path, md.id));
            }
            check_sticky(libc::S_ISVTX, parent_uid, md.uid, &caller, path)?;
            if_id = Some(md.id);
        }
        // A directory removal scans for children: the blocking pool.
        let removed = if kind == RemoveKind::Directory {
            blocking(move || meta.remove(&req.path, kind, if_id)).await?
        } else {
            quick(move || meta.remove(&req.path, kind, if_id))?
        };
        Ok(pb::Entry::from(&removed))
    }

    async fn grow_size(&self, _caller: Caller, req: pb::GrowSizeRequest) -> SfsResult<pb::Empty> {
        self.accept(&req.path)?;
        check_size("end of write", req.end)?;
        let meta = self.state.meta.clone();
        let update = MetaUpdate::GrowSize {
            end: req.end,
            time_ns: now_ns(),
        };
        let if_id = req
            .check_id
            .then(|| FileId::from_parts(req.id_hi, req.id_lo));
        quick(move || meta.update(&req.path, update, if_id))?;
        Ok(pb::Empty {})
    }

    async fn reserve_append(
        &self,
        _caller: Caller,
        req: pb::ReserveAppendRequest,
    ) -> SfsResult<pb::ReserveAppendResponse> {
        self.accept(&req.path)?;
        check_size("append length", req.len)?;
        let meta = self.state.meta.clone();
        let if_id = req
            .check_id
            .then(|| FileId::from_parts(req.id_hi, req.id_lo));
        let offset = quick(move || meta.reserve_append(&req.path, req.len, now_ns(), if_id))?;
        Ok(pb::ReserveAppendResponse { offset })
    }

    async fn truncate(&self, caller: Caller, req: pb::TruncateRequest) -> SfsResult<pb::Entry> {
        self.accept(&req.path)?;
        check_size("truncate size", req.size)?;
        let meta = self.state.meta.clone();
        if !req.opened_for_write {
            let path = req.path.as_str();
            let md = quick(|| meta.get(path)?.ok_or_else(|| SfsError::not_found(path)))?;
            if md.is_name_of_shared() {
                return Err(shared_elsewhere(path, md.id));
            }
            check_access(&md, &caller, MAY_WRITE, path)?;
        }
        let now = now_ns();
        let mut entry = quick(|| meta.truncate(&req.path, req.size, now))?;
        if entry.kind() == FileKind::File && write_drops_privileges(entry.mode, &caller) {
            entry = quick(|| meta.set_attr(&req.path, drop_privileges(&entry, now)))?;
        }
        Ok(pb::Entry::from(&entry))
    }

    async fn set_attr(&self, caller: Caller, req: pb::SetAttrRequest) -> SfsResult<pb::Entry> {
        self.accept(&req.path)?;
        if let Some(mode) = req.mode {
            if mode & !(libc::S_IFMT | 0o7777) != 0 {
                return Err(SfsError::invalid(format!(
                    "mode {mode:#o} has unknown bits"
                )));
            }
        }
        let meta = self.state.meta.clone();
        let path = req.path.as_str();
        let current = quick(|| meta.get(path)?.ok_or_else(|| SfsError::not_found(path)))?;
        if current.is_name_of_shared() {
            return Err(shared_elsewhere(path, current.id));
        }
        if req.drop_privileges {
            let only = req.mode.is_none()
                && req.uid.is_none()
                && req.gid.is_none()
                && req.atime_ns.is_none()
                && req.mtime_ns.is_none()
                && !req.times_now;
            if !only {
                return Err(SfsError::invalid("set_attr: drop_privileges comes alone"));
            }
            check_access(&current, &caller, MAY_WRITE, path)?;
            if current.kind() != FileKind::File || !write_drops_privileges(current.mode, &caller) {
                return Ok(pb::Entry::from(&current));
            }
            let update = drop_privileges(&current, now_ns());
            let entry = quick(|| meta.set_attr(path, update))?;
            return Ok(pb::Entry::from(&entry));
        }
        let mut change = AttrChange {
            mode: req.mode.map(|m| m & 0o7777),
            uid: req.uid,
            gid: req.gid,
            atime_ns: req.atime_ns,
            mtime_ns: req.mtime_ns,
            times_now: req.times_now,
        };
        check_set_attr(&current, &caller, &mut change, path)?;
        let now = now_ns();
        if change.times_now {
            change.atime_ns = Some(now);
            change.mtime_ns = Some(now);
        }
        let update = MetaUpdate::SetAttr {
            mode: change.mode,
            uid: change.uid,
            gid: change.gid,
            atime_ns: change.atime_ns,
            mtime_ns: change.mtime_ns,
            ctime_ns: now,
        };
        let entry = quick(move || meta.set_attr(&req.path, update))?;
        Ok(pb::Entry::from(&entry))
    }

    async fn readdir(
        &self,
        _caller: Caller,
        req: pb::ReaddirRequest,
    ) -> SfsResult<PageStream<pb::ReaddirPage>> {
        self.stream_listing(Listing::Children, req, |page| readdir_page(page, false))
    }

    async fn has_children(
        &self,
        _caller: Caller,
        req: pb::PathRequest,
    ) -> SfsResult<pb::HasChildrenResponse> {
        let path = req.path;
        self.accept_any(&path)?;
        let meta = self.state.meta.clone();
        let has_children = blocking(move || meta.has_children(&path)).await?;
        Ok(pb::HasChildrenResponse { has_children })
    }

    async fn put_entry(
        &self,
        caller: Caller,
        req: pb::PutEntryRequest,
    ) -> SfsResult<pb::PutEntryResponse> {
        self.accept(&req.path)?;
        let given = req
            .entry
            .as_ref()
            .ok_or_else(|| SfsError::invalid("put_entry without an entry"))?;
        if !given.xattrs_are_valid() {
            return Err(SfsError::invalid(
                "put_entry: malformed extended attributes",
            ));
        }
        let mut entry = Metadata::from(given);
        check_entry(&entry)?;
        if req.renamed && !entry.is_name_of_shared() {
            // rename(2) changes the ctime of what it moves (a hard-linked
            // file's is its shared entry's, which the client touches).
            entry.ctime_ns = entry.ctime_ns.max(now_ns());
        }
        let meta = self.state.meta.clone();
        if let (true, Some(parent_uid)) = (req.replace, req.sticky_parent_uid) {
            // Replacing another user's entry in a sticky directory.
            let path = req.path.as_str();
            if let Some(existing) = quick(|| meta.get(path))? {
                check_sticky(libc::S_ISVTX, parent_uid, existing.uid, &caller, path)?;
            }
        }
        let replaced = blocking(move || meta.put_entry(&req.path, entry, req.replace)).await?;
        Ok(pb::PutEntryResponse {
            replaced: replaced.as_ref().map(pb::Entry::from),
        })
    }

    async fn list_subtree(
        &self,
        _caller: Caller,
        req: pb::ReaddirRequest,
    ) -> SfsResult<PageStream<pb::SubtreePage>> {
        self.stream_listing(Listing::Subtree, req, |page| subtree_page(page, false))
    }

    async fn readdir_paged(
        &self,
        _caller: Caller,
        req: pb::ReaddirPageRequest,
    ) -> SfsResult<pb::ReaddirPage> {
        let (page, more) = self.listing_page(Listing::Children, req).await?;
        Ok(readdir_page(page, more))
    }

    async fn list_subtree_paged(
        &self,
        _caller: Caller,
        req: pb::ReaddirPageRequest,
    ) -> SfsResult<pb::SubtreePage> {
        let (page, more) = self.listing_page(Listing::Subtree, req).await?;
        Ok(subtree_page(page, more))
    }

    async fn sync_metadata(&self, _caller: Caller, _req: pb::Empty) -> SfsResult<pb::Empty> {
        self.state.served();
        let meta = self.state.meta.clone();
        blocking(move || meta.sync()).await?;
        Ok(pb::Empty {})
    }

    async fn share_entry(&self, _caller: Caller, req: pb::LinkRequest) -> SfsResult<pb::Entry> {
        self.accept(&req.path)?;
        let meta = self.state.meta.clone();
        let id = FileId::from_parts(req.id_hi, req.id_lo);
        let entry = quick(move || meta.share(&req.path, id))?;
        Ok(pb::Entry::from(&entry))
    }

    async fn add_links(&self, _caller: Caller, req: pb::LinkRequest) -> SfsResult<pb::Entry> {
        self.accept(&req.path)?;
        let shared = split_parent(&req.path)
            .is_some_and(|(parent, name)| parent == "/" && name.starts_with(SHARED_PREFIX));
        if !shared {
            return Err(SfsError::invalid(format!(
                "{}: link counts are kept only in shared entries",
                req.path
            )));
        }
        let meta = self.state.meta.clone();
        let id = FileId::from_parts(req.id_hi, req.id_lo);
        let entry = quick(move || meta.add_links(&req.path, id, req.delta, now_ns()))?;
        Ok(pb::Entry::from(&entry))
    }

    async fn set_xattr(&self, caller: Caller, req: pb::SetXattrRequest) -> SfsResult<pb::Entry> {
        self.accept(&req.path)?;
        let how = XattrSet::from_flags(req.flags)
            .ok_or_else(|| SfsError::invalid(format!("setxattr flags {:#x}", req.flags)))?;
        if let Some(value) = &req.value {
            if value.len() > XATTR_SIZE_MAX {
                return Err(SfsError::new(
                    Errno::E2BIG,
                    format!("an extended attribute value of {} bytes", value.len()),
                ));
            }
        }
        let meta = self.state.meta.clone();
        let path = req.path.as_str();
        let current = quick(|| meta.get(path)?.ok_or_else(|| SfsError::not_found(path)))?;
        if current.is_name_of_shared() {
            return Err(shared_elsewhere(path, current.id));
        }
        check_xattr(&current, &caller, &req.name, MAY_WRITE, path)?;
        let entry = quick(|| meta.set_xattr(path, &req.name, req.value.as_deref(), how, now_ns()))?;
        Ok(pb::Entry::from(&entry))
    }
}

/// [`check_access`] of an entry found by a create, except for the name of a
/// hard-linked file: its attributes are the shared entry's, where the
/// client checks.
fn check_access_here(
    md: &Metadata,
    caller: &sfs_global::access::Caller,
    access: u32,
    path: &str,
) -> SfsResult<()> {
    if md.is_name_of_shared() {
        return Ok(());
    }
    check_access(md, caller, access, path)
}

/// The update a write or truncate by a caller other than root makes to a
/// file whose mode has `S_ISUID` (or `S_ISGID` with group execute).
fn drop_privileges(md: &Metadata, now: i64) -> MetaUpdate {
    MetaUpdate::SetAttr {
        mode: Some(without_privileges(md.mode & 0o7777)),
        uid: None,
        gid: None,
        atime_ns: None,
        mtime_ns: None,
        ctime_ns: now,
    }
}
