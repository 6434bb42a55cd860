//! A tree in an S3 bucket (`s3://BUCKET/PREFIX`), through `object_store`.
//!
//! Mapping (docs/staging.md): the file at relative path `a/b` is the object
//! `PREFIX/a/b`, dense (holes are stored as zeros), with its mode and mtime
//! also in user metadata (`x-amz-meta-sfs-mode`, octal, and
//! `x-amz-meta-sfs-mtime-ns`). S3 has no directories or symlinks, so a
//! stage of a directory tree writes a **sidecar**, `PREFIX/.sfs-stage.json`,
//! that lists every directory (with mode and mtime) and symlink (with its
//! target), and every file's mode, mtime and size. Reading a tree back, a
//! file whose object has another size than the sidecar says (changed by
//! someone else) gets mode 0644 and the object's last-modified time, as
//! does an object the sidecar does not know.
//!
//! A file of one range is one PUT; a larger one is a multipart upload
//! whose part *i* is range *i*, uploaded by whichever worker moves that
//! range (parts may arrive in any order).
//!
//! Endpoint and credentials come from the usual `AWS_*` environment
//! variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`); an
//! `http://` endpoint is allowed without `AWS_ALLOW_HTTP`.

use super::tree::{join_rel, Entry, EntryKind, FileSink, FileState, Tree};
use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::{
    Attribute, Attributes, GetOptions, MultipartId, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The sidecar's name under the prefix.
pub const SIDECAR: &str = ".sfs-stage.json";

/// Mode of an object the sidecar does not describe.
const DEFAULT_FILE_MODE: u32 = 0o644;
/// Mode of a directory the sidecar does not describe.
const DEFAULT_DIR_MODE: u32 = 0o755;

/// The sidecar: what S3 cannot hold itself.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Sidecar {
    version: u32,
    entries: BTreeMap<String, SidecarEntry>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct SidecarEntry {
    kind: EntryKind,
    mode: u32,
    mtime_ns: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    target: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `s3://bucket/prefix` split into bucket and prefix (without slashes at
/// either end); `None` if `url` is not an S3 URL.
pub fn parse_url(url: &str) -> Option<Result<(String, String)>> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Some(Err(anyhow!("{url}: no bucket (s3://BUCKET/PREFIX)")));
    }
    Some(Ok((
        bucket.to_string(),
        prefix.trim_matches('/').to_string(),
    )))
}

/// A connection to one bucket, shared by the trees in it.
pub struct Bucket {
    store: Arc<AmazonS3>,
    runtime: Arc<tokio::runtime::Runtime>,
    name: String,
}

impl Bucket {
    /// The bucket `name` at the endpoint and with the credentials of the
    /// environment; requests run on `runtime`.
    pub fn connect(name: &str, runtime: Arc<tokio::runtime::Runtime>) -> Result<Bucket> {
        let endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
            .iter()
            .find_map(|v| std::env::var(v).ok())
            .unwrap_or_default();
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(name);
        if endpoint.starts_with("http://") {
            builder = builder.with_allow_http(true);
        }
        let store = builder.build().with_context(|| {
            format!("s3://{name}: cannot use the S3 settings of the environment (AWS_*)")
        })?;
        Ok(Bucket {
            store: Arc::new(store),
            runtime,
            name: name.to_string(),
        })
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

/// A tree under a prefix of a bucket.
pub struct S3Tree {
    bucket: Arc<Bucket>,
    prefix: String,
    /// The sidecar as the walk found it (for [`Tree::file_state`]).
    sidecar: Mutex<Option<Sidecar>>,
}

impl S3Tree {
    pub fn new(bucket: Arc<Bucket>, prefix: String) -> S3Tree {
        S3Tree {
            bucket,
            prefix,
            sidecar: Mutex::new(None),
        }
    }

    fn key_string(&self, rel: &str) -> String {
        join_rel(&self.prefix, rel)
    }

    /// The object key of `rel`; an error for a name that S3 keys through
    /// object_store cannot carry unchanged (it would be escaped).
    fn key(&self, rel: &str) -> Result<Key> {
        let raw = self.key_string(rel);
        if sfs_global::path::unescape(rel).as_ref() != rel.as_bytes() {
            bail!(
                "{}: the name is not UTF-8, as S3 keys must be",
                self.describe(rel)
            );
        }
        let key = Key::from(raw.as_str());
        if key.as_ref() != raw {
            bail!(
                "{}: the name cannot be an S3 key unchanged (empty, `.`/`..` or escaped parts)",
                self.describe(rel)
            );
        }
        Ok(key)
    }

    fn sidecar_key(&self) -> Key {
        Key::from(join_rel(&self.prefix, SIDECAR).as_str())
    }

    fn load_sidecar(&self) -> Result<Option<Sidecar>> {
        let key = self.sidecar_key();
        let got = self.bucket.block_on(async {
            match self.bucket.store.get(&key).await {
                Ok(got) => got.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        let Some(bytes) = got.with_context(|| format!("reading {}", self.describe(SIDECAR)))?
        else {
            return Ok(None);
        };
        let sidecar = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a stage sidecar", self.describe(SIDECAR)))?;
        Ok(Some(sidecar))
    }

    /// Every object under the prefix.
    fn list(&self) -> Result<Vec<ObjectMeta>> {
        let prefix = Key::from(self.prefix.as_str());
        self.bucket
            .block_on(self.bucket.store.list(Some(&prefix)).try_collect())
            .with_context(|| format!("listing {}", self.describe("")))
    }

    fn head(&self, rel: &str) -> Result<Option<ObjectMeta>> {
        let key = self.key(rel)?;
        match self.bucket.block_on(self.bucket.store.head(&key)) {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| self.describe(rel)),
        }
    }

    /// The mode and mtime in the user metadata of object `rel`.
    fn object_attributes(&self, rel: &str) -> Result<(Option<u32>, Option<i64>)> {
        let key = self.key(rel)?;
        let options = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let got = self
            .bucket
            .block_on(self.bucket.store.get_opts(&key, options))
            .with_context(|| self.describe(rel))?;
        let value = |name: &'static str| {
            got.attributes
                .get(&Attribute::Metadata(name.into()))
                .map(|v| v.as_ref().to_string())
        };
        let mode = value("sfs-mode").and_then(|m| u32::from_str_radix(&m, 8).ok());
        let mtime = value("sfs-mtime-ns").and_then(|m| m.parse().ok());
        Ok((mode, mtime))
    }
}

fn nanos(meta: &ObjectMeta) -> i64 {
    meta.last_modified.timestamp_nanos_opt().unwrap_or(0)
}

/// The version of an object (what says it changed): its last-modified
/// time in whole seconds, as HEAD gives it (a listing has milliseconds).
fn version(meta: &ObjectMeta) -> i64 {
    meta.last_modified.timestamp() * 1_000_000_000
}

/// The user metadata that carries mode and mtime on an object.
fn attributes(mode: u32, mtime_ns: i64) -> Attributes {
    let mut attributes = Attributes::new();
    attributes.insert(
        Attribute::Metadata("sfs-mode".into()),
        format!("{mode:o}").into(),
    );
    attributes.insert(
        Attribute::Metadata("sfs-mtime-ns".into()),
        mtime_ns.to_string().into(),
    );
    attributes
}

impl Tree for S3Tree {
    fn describe(&self, rel: &str) -> String {
        format!("s3://{}/{}", self.bucket.name, self.key_string(rel))
    }

    fn root_kind(&self) -> Result<Option<EntryKind>> {
        if self.prefix.is_empty() {
            return Ok(Some(EntryKind::Dir));
        }
        let prefix = Key::from(self.prefix.as_str());
        let first = self.bucket.block_on(async {
            let mut listing = self.bucket.store.list(Some(&prefix));
            listing.try_next().await
        });
        if first
            .with_context(|| format!("listing {}", self.describe("")))?
            .is_some()
        {
            return Ok(Some(EntryKind::Dir));
        }
        Ok(self.head("")?.map(|_| EntryKind::File))
    }

    fn walk(
        &self,
        prune: &dyn Fn(&str) -> bool,
        _problems: &mut Vec<(String, String)>,
    ) -> Result<Vec<Entry>> {
        if self.root_kind()? == Some(EntryKind::File) {
            let object = self.entry("")?.context("the object went away")?;
            return Ok(vec![object]);
        }
        let sidecar = self.load_sidecar()?.unwrap_or_default();
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        let dir = |rel: &str, sidecar: &Sidecar| {
            let known = sidecar
                .entries
                .get(rel)
                .filter(|e| e.kind == EntryKind::Dir);
            Entry {
                rel: rel.to_string(),
                kind: EntryKind::Dir,
                mode: known.map_or(DEFAULT_DIR_MODE, |e| e.mode),
                mtime_ns: known.map_or(0, |e| e.mtime_ns),
                size: 0,
                target: String::new(),
                version: 0,
            }
        };
        entries.insert(String::new(), dir("", &sidecar));
        let inside = |key: &str| -> Option<String> {
            match self.prefix.is_empty() {
                true => Some(key.to_string()),
                false => key
                    .strip_prefix(self.prefix.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                    .map(str::to_string),
            }
        };
        for meta in self.list()? {
            let Some(rel) = inside(meta.location.as_ref()) else {
                continue;
            };
            if rel == SIDECAR {
                continue;
            }
            let mut parent = rel.as_str();
            while let Some((up, _)) = parent.rsplit_once('/') {
                entries
                    .entry(up.to_string())
                    .or_insert_with(|| dir(up, &sidecar));
                parent = up;
            }
            let known = sidecar
                .entries
                .get(&rel)
                .filter(|e| e.kind == EntryKind::File && e.size == meta.size);
            entries.insert(
                rel.clone(),
                Entry {
                    rel,
                    kind: EntryKind::File,
                    mode: known.map_or(DEFAULT_FILE_MODE, |e| e.mode),
                    mtime_ns: known.map_or_else(|| nanos(&meta), |e| e.mtime_ns),
                    size: meta.size,
                    target: String::new(),
                    version: version(&meta),
                },
            );
        }
        // Empty directories and symlinks exist only in the sidecar.
        for (rel, known) in &sidecar.entries {
            if entries.contains_key(rel) || known.kind == EntryKind::File {
                continue;
            }
            entries.insert(
                rel.clone(),
                Entry {
                    rel: rel.clone(),
                    kind: known.kind,
                    mode: known.mode,
                    mtime_ns: known.mtime_ns,
                    size: 0,
                    target: known.target.clone(),
                    version: 0,
                },
            );
        }
        // The walk order (parents first) and pruning of whole subtrees.
        let mut pruned: HashMap<String, bool> = HashMap::new();
        let mut is_pruned = |rel: &str| -> bool {
            let mut at = 0;
            while let Some(slash) = rel[at..].find('/') {
                let dir = &rel[..at + slash];
                if *pruned.entry(dir.to_string()).or_insert_with(|| prune(dir)) {
                    return true;
                }
                at += slash + 1;
            }
            !rel.is_empty() && prune(rel)
        };
        let walked = entries
            .into_values()
            .filter(|e| !is_pruned(&e.rel))
            .collect();
        *self.sidecar.lock().unwrap_or_else(|p| p.into_inner()) = Some(sidecar);
        Ok(walked)
    }

    /// The object `rel` with the mode and mtime of its user metadata
    /// (symlinks live in the sidecar: never found here).
    fn entry(&self, rel: &str) -> Result<Option<Entry>> {
        let Some(meta) = self.head(rel)? else {
            return Ok(None);
        };
        let (mode, mtime) = self.object_attributes(rel)?;
        Ok(Some(Entry {
            rel: rel.to_string(),
            kind: EntryKind::File,
            mode: mode.unwrap_or(DEFAULT_FILE_MODE),
            mtime_ns: mtime.unwrap_or_else(|| nanos(&meta)),
            size: meta.size,
            target: String::new(),
            version: version(&meta),
        }))
    }

    fn file_state(&self, rel: &str) -> Result<Option<FileState>> {
        Ok(self.head(rel)?.map(|meta| FileState {
            size: meta.size,
            mtime_ns: version(&meta),
        }))
    }

    fn read_at(&self, rel: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(()); // S3 has no empty range to ask for
        }
        let key = self.key(rel)?;
        let end = offset + buf.len() as u64;
        let bytes = self
            .bucket
            .block_on(self.bucket.store.get_range(&key, offset..end))
            .with_context(|| format!("reading {} at {offset}", self.describe(rel)))?;
        if bytes.len() != buf.len() {
            bail!(
                "{}: {} bytes at {offset} where {} were expected (it shrank)",
                self.describe(rel),
                bytes.len(),
                buf.len()
            );
        }
        buf.copy_from_slice(&bytes);
        Ok(())
    }

    fn make_dir(&self, _rel: &str) -> Result<()> {
        Ok(()) // in the sidecar, at `finish`
    }

    fn make_symlink(&self, _rel: &str, _target: &str, _mtime_ns: i64) -> Result<()> {
        Ok(()) // in the sidecar, at `finish`
    }

    fn create_file(&self, entry: &Entry, ranges: usize) -> Result<Box<dyn FileSink>> {
        let key = self.key(&entry.rel)?;
        let label = self.describe(&entry.rel);
        let upload = if ranges > 1 {
            let options = PutMultipartOptions {
                attributes: attributes(entry.mode, entry.mtime_ns),
                ..PutMultipartOptions::default()
            };
            let id = self
                .bucket
                .block_on(self.bucket.store.create_multipart_opts(&key, options))
                .with_context(|| format!("starting the upload of {label}"))?;
            Some(Upload {
                id,
                parts: Mutex::new(vec![None; ranges]),
            })
        } else {
            None
        };
        Ok(Box::new(S3Sink {
            bucket: Arc::clone(&self.bucket),
            key,
            label,
            size: entry.size,
            mode: entry.mode,
            mtime_ns: entry.mtime_ns,
            single: Mutex::new(None),
            upload,
        }))
    }

    fn set_dir_attrs(&self, _rel: &str, _mode: u32, _mtime_ns: i64) -> Result<()> {
        Ok(()) // in the sidecar, at `finish`
    }

    fn read_link(&self, _rel: &str) -> Result<Option<String>> {
        Ok(None) // the sidecar is read back at `finish`
    }

    /// Writes the sidecar: the one found there, updated with `entries`
    /// (a single file needs none: its object's metadata says it all).
    fn finish(&self, entries: &[Entry]) -> Result<()> {
        if !entries
            .iter()
            .any(|e| e.rel.is_empty() && e.kind == EntryKind::Dir)
        {
            return Ok(());
        }
        let mut sidecar = self.load_sidecar()?.unwrap_or_default();
        sidecar.version = 1;
        for e in entries.iter().filter(|e| !e.rel.is_empty()) {
            sidecar.entries.insert(
                e.rel.clone(),
                SidecarEntry {
                    kind: e.kind,
                    mode: e.mode,
                    mtime_ns: e.mtime_ns,
                    size: e.size,
                    target: e.target.clone(),
                },
            );
        }
        if let Some(root) = entries.iter().find(|e| e.rel.is_empty()) {
            sidecar.entries.insert(
                String::new(),
                SidecarEntry {
                    kind: EntryKind::Dir,
                    mode: root.mode,
                    mtime_ns: root.mtime_ns,
                    size: 0,
                    target: String::new(),
                },
            );
        }
        let text = serde_json::to_vec_pretty(&sidecar)?;
        let key = self.sidecar_key();
        self.bucket
            .block_on(self.bucket.store.put(&key, PutPayload::from(text.clone())))
            .with_context(|| format!("writing {}", self.describe(SIDECAR)))?;
        // Verified like a file: read back and compared.
        let back = self
            .bucket
            .block_on(async { self.bucket.store.get(&key).await?.bytes().await })
            .with_context(|| format!("reading back {}", self.describe(SIDECAR)))?;
        if back.as_ref() != text.as_slice() {
            bail!(
                "{}: reads back different from what was written",
                self.describe(SIDECAR)
            );
        }
        Ok(())
    }
}

/// A multipart upload in progress.
struct Upload {
    id: MultipartId,
    /// Part `i` once range `i` is uploaded.
    parts: Mutex<Vec<Option<PartId>>>,
}

/// An S3 object being written.
struct S3Sink {
    bucket: Arc<Bucket>,
    key: Key,
    label: String,
    size: u64,
    mode: u32,
    mtime_ns: i64,
    /// A one-range file: its bytes, PUT whole at `complete`.
    single: Mutex<Option<Vec<u8>>>,
    /// A file of several ranges: one part each.
    upload: Option<Upload>,
}

impl FileSink for S3Sink {
    fn write_range(&self, index: usize, offset: u64, data: &[u8]) -> Result<()> {
        let Some(upload) = &self.upload else {
            *self.single.lock().unwrap_or_else(|p| p.into_inner()) = Some(data.to_vec());
            return Ok(());
        };
        let payload = PutPayload::from(data.to_vec());
        let part = self
            .bucket
            .block_on(
                self.bucket
                    .store
                    .put_part(&self.key, &upload.id, index, payload),
            )
            .with_context(|| format!("uploading {} at {offset}", self.label))?;
        upload.parts.lock().unwrap_or_else(|p| p.into_inner())[index] = Some(part);
        Ok(())
    }

    fn complete(&self) -> Result<()> {
        let Some(upload) = &self.upload else {
            let data = self
                .single
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_default();
            let options = PutOptions {
                attributes: attributes(self.mode, self.mtime_ns),
                ..PutOptions::default()
            };
            self.bucket
                .block_on(
                    self.bucket
                        .store
                        .put_opts(&self.key, PutPayload::from(data), options),
                )
                .with_context(|| format!("writing {}", self.label))?;
            return Ok(());
        };
        let parts: Option<Vec<PartId>> = upload
            .parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
            .map(Option::take)
            .collect();
        let Some(parts) = parts else {
            bail!("{}: completing an upload with parts missing", self.label);
        };
        self.bucket
            .block_on(
                self.bucket
                    .store
                    .complete_multipart(&self.key, &upload.id, parts),
            )
            .with_context(|| format!("completing the upload of {}", self.label))?;
        let stored = self
            .bucket
            .block_on(self.bucket.store.head(&self.key))
            .with_context(|| self.label.clone())?;
        if stored.size != self.size {
            bail!(
                "{}: stored {} bytes, {} were sent",
                self.label,
                stored.size,
                self.size
            );
        }
        Ok(())
    }

    fn abort(&self) {
        if let Some(upload) = &self.upload {
            let _ = self
                .bucket
                .block_on(self.bucket.store.abort_multipart(&self.key, &upload.id));
        }
    }
}
