//! Extended attributes (`getxattr(2)` and its family).
//!
//! A file's attributes live in its entry ([`Metadata::xattrs`]), so they
//! cost nothing to files without them and travel with every stat of a file
//! that has some: reading or listing them is the stat the call makes
//! anyway, one round trip, checked here against the caller with the rules
//! the servers use ([`check_xattr`]). Setting or removing one is one call
//! to the entry's owner, which checks and changes it under the entry's
//! lock; a hard-linked file keeps them in its shared entry, where
//! [`Client::on_attributes`] sends the change. docs/semantics.md
//! ("Extended attributes") lists the rules and limits.

use crate::Client;
use sfs_global::access::{check_xattr, lists_xattr, MAY_READ};
use sfs_global::metadata::XattrSet;
use sfs_global::{Errno, Metadata, SfsError, SfsResult};
use sfs_rpc::pb;

pub use sfs_global::metadata::{XATTR_CREATE, XATTR_REPLACE};

impl Client {
    /// `getxattr(2)` (`follow`) or `lgetxattr(2)`: the value of attribute
    /// `name` of the entry at `path`. ENODATA when it has none of that name.
    pub fn get_xattr(&self, path: &str, name: &[u8], follow: bool) -> SfsResult<Vec<u8>> {
        let md = self.xattr_holder(path, follow)?;
        let caller = self.options.caller.current();
        check_xattr(&md, &caller, name, MAY_READ, path)?;
        md.xattr(name).map(<[u8]>::to_vec).ok_or_else(|| {
            SfsError::new(
                Errno::ENODATA,
                format!(
                    "{path}: no extended attribute {}",
                    String::from_utf8_lossy(name)
                ),
            )
        })
    }

    /// `listxattr(2)` (`follow`) or `llistxattr(2)`: the names of the
    /// attributes of the entry at `path` the caller may see (`trusted.*`
    /// only for root), in name order.
    pub fn list_xattrs(&self, path: &str, follow: bool) -> SfsResult<Vec<Vec<u8>>> {
        let md = self.xattr_holder(path, follow)?;
        let caller = self.options.caller.current();
        Ok(md
            .xattrs
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| lists_xattr(&caller, name))
            .collect())
    }

    /// `setxattr(2)` (`follow`) or `lsetxattr(2)` with `value`, or
    /// `removexattr(2)`/`lremovexattr(2)` without: `flags` is 0,
    /// [`XATTR_CREATE`] or [`XATTR_REPLACE`].
    pub fn set_xattr(
        &self,
        path: &str,
        name: &[u8],
        value: Option<&[u8]>,
        flags: u32,
        follow: bool,
    ) -> SfsResult<()> {
        if XattrSet::from_flags(flags).is_none() {
            return Err(SfsError::invalid(format!("setxattr flags {flags:#x}")));
        }
        self.through_dirs(path, |path| {
            self.block_on(async {
                let target = self.final_target(path, follow).await?;
                self.on_attributes(&target, None, |at| {
                    let request = pb::SetXattrRequest {
                        path: at.clone(),
                        name: name.to_vec(),
                        value: value.map(<[u8]>::to_vec),
                        flags,
                    };
                    async move { self.owner(&at).await?.rpc.set_xattr(request).await }
                })
                .await
                .map(|_| ())
            })
        })
    }

    /// The entry whose attributes a call on `path` reads (a hard-linked
    /// file's shared entry is what stat answers).
    fn xattr_holder(&self, path: &str, follow: bool) -> SfsResult<Metadata> {
        if follow {
            self.stat(path)
        } else {
            self.lstat(path)
        }
    }
}
