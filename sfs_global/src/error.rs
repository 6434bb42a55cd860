//! The error every SFS layer converts into on its way to an application.
//!
//! An application sees exactly one thing of an error: its errno. A person sees
//! the message. [`SfsError`] therefore carries both, and the errno is chosen at
//! the place that knows the cause, not guessed later from a string.

use std::fmt;

/// A POSIX error number (the value `errno` is set to).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub const EBUSY: Errno = Errno(libc::EBUSY);
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const EXDEV: Errno = Errno(libc::EXDEV);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EFBIG: Errno = Errno(libc::EFBIG);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const ESPIPE: Errno = Errno(libc::ESPIPE);
    pub const EROFS: Errno = Errno(libc::EROFS);
    pub const EMFILE: Errno = Errno(libc::EMFILE);
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    pub const ENOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
    pub const ELOOP: Errno = Errno(libc::ELOOP);
    pub const ENXIO: Errno = Errno(libc::ENXIO);
    pub const ENOTSUP: Errno = Errno(libc::ENOTSUP);
    pub const ETIMEDOUT: Errno = Errno(libc::ETIMEDOUT);
    pub const ECONNREFUSED: Errno = Errno(libc::ECONNREFUSED);
    pub const EADDRNOTAVAIL: Errno = Errno(libc::EADDRNOTAVAIL);
    pub const EOVERFLOW: Errno = Errno(libc::EOVERFLOW);
    pub const EPROTO: Errno = Errno(libc::EPROTO);
    pub const ESTALE: Errno = Errno(libc::ESTALE);
    pub const ENOSYS: Errno = Errno(libc::ENOSYS);
    pub const EREMOTE: Errno = Errno(libc::EREMOTE);
    /// Never an application's: a server's answer that the name it was asked
    /// to change is one of a hard-linked file's names, whose attributes
    /// live in its shared entry ([`crate::metadata::shared_path`]); the
    /// client asks there instead.
    pub const EREMCHG: Errno = Errno(libc::EREMCHG);
    pub const EMLINK: Errno = Errno(libc::EMLINK);
    pub const ENODATA: Errno = Errno(libc::ENODATA);
    pub const E2BIG: Errno = Errno(libc::E2BIG);
    pub const ERANGE: Errno = Errno(libc::ERANGE);

    /// The symbolic name, for messages (`ENOENT`), or the number if unknown.
    pub fn name(self) -> String {
        let known = [
            (libc::EPERM, "EPERM"),
            (libc::ENOENT, "ENOENT"),
            (libc::EIO, "EIO"),
            (libc::EBADF, "EBADF"),
            (libc::EAGAIN, "EAGAIN"),
            (libc::EBUSY, "EBUSY"),
            (libc::EACCES, "EACCES"),
            (libc::EEXIST, "EEXIST"),
            (libc::EXDEV, "EXDEV"),
            (libc::ENOTDIR, "ENOTDIR"),
            (libc::EISDIR, "EISDIR"),
            (libc::EINVAL, "EINVAL"),
            (libc::EFBIG, "EFBIG"),
            (libc::ENOSPC, "ENOSPC"),
            (libc::ESPIPE, "ESPIPE"),
            (libc::EROFS, "EROFS"),
            (libc::EMFILE, "EMFILE"),
            (libc::ENAMETOOLONG, "ENAMETOOLONG"),
            (libc::ENOTEMPTY, "ENOTEMPTY"),
            (libc::ELOOP, "ELOOP"),
            (libc::ENXIO, "ENXIO"),
            (libc::ENOTSUP, "ENOTSUP"),
            (libc::ETIMEDOUT, "ETIMEDOUT"),
            (libc::ECONNREFUSED, "ECONNREFUSED"),
            (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
            (libc::EOVERFLOW, "EOVERFLOW"),
            (libc::EPROTO, "EPROTO"),
            (libc::ESTALE, "ESTALE"),
            (libc::ENOSYS, "ENOSYS"),
            (libc::EREMCHG, "EREMCHG"),
            (libc::EMLINK, "EMLINK"),
            (libc::ENODATA, "ENODATA"),
            (libc::E2BIG, "E2BIG"),
            (libc::ERANGE, "ERANGE"),
        ];
        known
            .iter()
            .find(|(n, _)| *n == self.0)
            .map(|(_, s)| s.to_string())
            .unwrap_or_else(|| format!("errno {}", self.0))
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// An error with the errno an application gets and the message a person reads.
#[derive(Clone, PartialEq, Eq)]
pub struct SfsError {
    pub errno: Errno,
    pub message: String,
}

pub type SfsResult<T> = Result<T, SfsError>;

impl SfsError {
    pub fn new(errno: Errno, message: impl Into<String>) -> Self {
        SfsError {
            errno,
            message: message.into(),
        }
    }
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(Errno::ENOENT, format!("{what}: no such file or directory"))
    }
    pub fn exists(what: impl fmt::Display) -> Self {
        Self::new(Errno::EEXIST, format!("{what}: already exists"))
    }
    pub fn not_dir(what: impl fmt::Display) -> Self {
        Self::new(Errno::ENOTDIR, format!("{what}: not a directory"))
    }
    pub fn is_dir(what: impl fmt::Display) -> Self {
        Self::new(Errno::EISDIR, format!("{what}: is a directory"))
    }
    pub fn not_empty(what: impl fmt::Display) -> Self {
        Self::new(Errno::ENOTEMPTY, format!("{what}: directory not empty"))
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Errno::EINVAL, message)
    }
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(Errno::EIO, message)
    }
    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::new(Errno::ENOTSUP, message)
    }
    pub fn bad_fd(fd: i64) -> Self {
        Self::new(
            Errno::EBADF,
            format!("descriptor {fd} is not an open SFS file"),
        )
    }
    pub fn timed_out(message: impl Into<String>) -> Self {
        Self::new(Errno::ETIMEDOUT, message)
    }
    pub fn no_space(message: impl Into<String>) -> Self {
        Self::new(Errno::ENOSPC, message)
    }
}

impl fmt::Display for SfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.errno)
    }
}

impl fmt::Debug for SfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for SfsError {}

impl From<std::io::Error> for SfsError {
    fn from(e: std::io::Error) -> Self {
        let errno = match e.raw_os_error() {
            Some(n) => Errno(n),
            None => match e.kind() {
                std::io::ErrorKind::NotFound => Errno::ENOENT,
                std::io::ErrorKind::AlreadyExists => Errno::EEXIST,
                std::io::ErrorKind::TimedOut => Errno::ETIMEDOUT,
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => Errno::EINVAL,
                std::io::ErrorKind::UnexpectedEof => Errno::EIO,
                _ => Errno::EIO,
            },
        };
        SfsError::new(errno, e.to_string())
    }
}

impl From<SfsError> for std::io::Error {
    fn from(e: SfsError) -> Self {
        std::io::Error::new(
            std::io::Error::from_raw_os_error(e.errno.0).kind(),
            e.to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_errno() {
        let e: SfsError = std::io::Error::from_raw_os_error(libc::ENOSPC).into();
        assert_eq!(e.errno, Errno::ENOSPC);
        let e: SfsError = std::io::Error::new(std::io::ErrorKind::TimedOut, "x").into();
        assert_eq!(e.errno, Errno::ETIMEDOUT);
    }

    #[test]
    fn display_names_the_errno() {
        let e = SfsError::not_found("/a/b");
        assert_eq!(e.to_string(), "/a/b: no such file or directory (ENOENT)");
        assert_eq!(format!("{:?}", Errno(9999)), "errno 9999");
    }
}
