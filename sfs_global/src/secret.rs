//! The job secret: 32 random bytes that every server and client of one job
//! holds and no one else does. Every connection to a server proves it holds
//! the secret before anything is served (`sfs_rpc::auth`, a
//! challenge-response: the secret never crosses the network).
//!
//! Where it comes from (docs/security.md), servers and clients alike, first
//! match wins:
//!
//! 1. `SFS_SECRET`: the secret itself, 64 hex digits (a job that makes and
//!    hands out its own);
//! 2. `SFS_SECRET_FILE`: a file holding it;
//! 3. the config's `secret_file`;
//! 4. `<hostfile>.secret`, beside the hostfile the process reads.
//!
//! A file holds the 64 hex digits and a newline, and must not be readable
//! by group or others (mode 0600, as ssh insists for its keys). `sfs start`
//! and a starting server create a missing file (atomically: the servers of
//! one host may race); clients only read.

use crate::config::Config;
use crate::hostfile::Hostfile;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Bytes of a secret.
pub const SECRET_LEN: usize = 32;

/// The environment variable holding the secret itself.
pub const SECRET_VAR: &str = "SFS_SECRET";
/// The environment variable naming the secret file.
pub const SECRET_FILE_VAR: &str = "SFS_SECRET_FILE";

/// A job secret. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_LEN]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Fills `buf` from the kernel's random source.
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe the writable slice `rest`;
        // getrandom writes at most that many bytes into it.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

/// Where a secret was found, for messages ("the secret of ...").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Environment,
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Environment => write!(f, "{SECRET_VAR}"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Secret {
    /// A new random secret.
    pub fn generate() -> std::io::Result<Secret> {
        let mut bytes = [0u8; SECRET_LEN];
        random_bytes(&mut bytes)?;
        Ok(Secret(bytes))
    }

    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Secret {
        Secret(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// The secret as 64 lower-case hex digits (what files and `SFS_SECRET`
    /// hold).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex digits (surrounding white space ignored).
    pub fn from_hex(text: &str) -> Result<Secret, String> {
        let text = text.trim();
        if text.len() != 2 * SECRET_LEN || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "expected {} hex digits, found {} characters",
                2 * SECRET_LEN,
                text.len()
            ));
        }
        let mut bytes = [0u8; SECRET_LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|e| format!("bad hex digits at {}: {e}", 2 * i))?;
        }
        Ok(Secret(bytes))
    }

    /// Reads a secret file, refusing one that group or others may read.
    pub fn load(path: &Path) -> Result<Secret, String> {
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{shown}: the job secret is readable by others (mode {mode:04o}); \
                 run `chmod 600 {shown}`"
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
        Secret::from_hex(&text).map_err(|e| format!("{shown}: not a job secret: {e}"))
    }

    /// Reads the secret file at `path`, first creating it with a new secret
    /// if there is none. Several processes may call this at once: the file
    /// is written under a private name and linked into place, so exactly
    /// one secret wins and everyone reads that one.
    pub fn load_or_create(path: &Path) -> Result<(Secret, bool), String> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => return Secret::load(path).map(|s| (s, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        let secret = Secret::generate().map_err(|e| format!("cannot make a job secret: {e}"))?;
        // A private name per attempt (threads of one process share a pid).
        let mut tag = [0u8; 8];
        random_bytes(&mut tag).map_err(|e| format!("cannot make a job secret: {e}"))?;
        let staged = PathBuf::from(format!(
            "{}.{:016x}.new",
            path.display(),
            u64::from_le_bytes(tag)
        ));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&staged)?;
            // The mode above is reduced by the umask, never widened; set it
            // exactly in case the umask is unusual.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            writeln!(file, "{}", secret.to_hex())?;
            file.sync_all()
        };
        let written = write();
        let linked = written
            .as_ref()
            .map_err(|e| format!("cannot write {}: {e}", staged.display()))
            .map(|()| std::fs::hard_link(&staged, path));
        let _ = std::fs::remove_file(&staged);
        match linked? {
            Ok(()) => Ok((secret, true)),
            // Another process made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Secret::load(path).map(|s| (s, false))
            }
            Err(e) => Err(format!(
                "cannot create the job secret {}: {e}",
                path.display()
            )),
        }
    }
}

/// The secret file beside a hostfile: `<hostfile>.secret`.
pub fn default_path(hostfile: &Path) -> PathBuf {
    let mut name = hostfile.as_os_str().to_owned();
    name.push(".secret");
    PathBuf::from(name)
}

/// What a process looks at for its secret, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// `SFS_SECRET` is set (to this text).
    Value(String),
    /// A file: named by `SFS_SECRET_FILE`, the config, or the hostfile.
    File { path: PathBuf, named_by: String },
    /// Nothing names one (the hostfile was not read from a file).
    Nothing,
}

/// Follows the lookup order of the module documentation; `env` reads an
/// environment variable (a parameter so tests need not change the
/// process's environment).
pub fn lookup(
    config: &Config,
    hostfile: &Hostfile,
    env: impl Fn(&str) -> Option<String>,
) -> Lookup {
    if let Some(value) = env(SECRET_VAR).filter(|v| !v.is_empty()) {
        return Lookup::Value(value);
    }
    if let Some(file) = env(SECRET_FILE_VAR).filter(|v| !v.is_empty()) {
        return Lookup::File {
            path: PathBuf::from(file),
            named_by: SECRET_FILE_VAR.into(),
        };
    }
    if !config.secret_file.is_empty() {
        return Lookup::File {
            path: PathBuf::from(&config.secret_file),
            named_by: "the config's `secret_file`".into(),
        };
    }
    match &hostfile.path {
        Some(path) => Lookup::File {
            path: default_path(path),
            named_by: format!("the hostfile {}", path.display()),
        },
        None => Lookup::Nothing,
    }
}

/// The process environment as `std::env` reads it (the default `env` of
/// [`for_client`] and [`for_server`]; the shim reads `environ` itself).
pub fn environment(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn nothing_message() -> String {
    format!(
        "no job secret: set {SECRET_VAR} or {SECRET_FILE_VAR}, set `secret_file` in the \
         config, or read the hostfile from a file (its secret is <hostfile>.secret)"
    )
}

/// The secret a client uses (never creates one); `env` reads the
/// environment ([`environment`]).
pub fn for_client(
    config: &Config,
    hostfile: &Hostfile,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Secret, Source), String> {
    match lookup(config, hostfile, env) {
        Lookup::Value(text) => Secret::from_hex(&text)
            .map(|s| (s, Source::Environment))
            .map_err(|e| format!("{SECRET_VAR}: not a job secret: {e}")),
        Lookup::File { path, named_by } => match Secret::load(&path) {
            Ok(secret) => Ok((secret, Source::File(path))),
            Err(e) => Err(format!(
                "cannot read the job secret (file named by {named_by}): {e}; \
                 `sfs start` or the first server creates it"
            )),
        },
        Lookup::Nothing => Err(nothing_message()),
    }
}

/// The secret a server uses, creating the file if it is missing.
pub fn for_server(config: &Config, hostfile: &Hostfile) -> Result<(Secret, Source), String> {
    match lookup(config, hostfile, environment) {
        Lookup::Value(text) => Secret::from_hex(&text)
            .map(|s| (s, Source::Environment))
            .map_err(|e| format!("{SECRET_VAR}: not a job secret: {e}")),
        Lookup::File { path, named_by } => match Secret::load_or_create(&path) {
            Ok((secret, _)) => Ok((secret, Source::File(path))),
            Err(e) => Err(format!("job secret (file named by {named_by}): {e}")),
        },
        Lookup::Nothing => Err(nothing_message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hostfile_at(path: &Path) -> Hostfile {
        let mut h = Hostfile::parse("s0 127.0.0.1:7000\n", "test").unwrap();
        h.path = Some(path.to_path_buf());
        h
    }

    #[test]
    fn hex_round_trip_and_refusals() {
        let s = Secret::generate().unwrap();
        assert_eq!(Secret::from_hex(&s.to_hex()).unwrap(), s);
        assert_eq!(Secret::from_hex(&format!(" {}\n", s.to_hex())).unwrap(), s);
        assert!(Secret::from_hex("abcd").is_err());
        assert!(Secret::from_hex(&"zz".repeat(SECRET_LEN)).is_err());
        assert_ne!(Secret::generate().unwrap(), s, "two secrets are equal");
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    #[test]
    fn created_file_is_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hostfile.secret");
        let (made, created) = Secret::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = Secret::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again, made);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "staged file left"
        );
    }

    #[test]
    fn racing_creators_agree_on_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let secrets: Vec<Secret> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| Secret::load_or_create(&path).unwrap().0))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(secrets.iter().all(|s| *s == secrets[0]));
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        Secret::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secret::load(&path).unwrap_err();
        assert!(e.contains("chmod 600") && e.contains("0644"), "{e}");
    }

    #[test]
    fn lookup_order() {
        let config = Config::default();
        let hostfile = hostfile_at(Path::new("/jobs/7/hostfile"));
        let none = |_: &str| None;
        assert_eq!(
            lookup(&config, &hostfile, none),
            Lookup::File {
                path: "/jobs/7/hostfile.secret".into(),
                named_by: "the hostfile /jobs/7/hostfile".into()
            }
        );
        let with_config = Config {
            secret_file: "/etc/sfs.key".into(),
            ..Config::default()
        };
        assert!(matches!(
            lookup(&with_config, &hostfile, none),
            Lookup::File { path, .. } if path == Path::new("/etc/sfs.key")
        ));
        let file_var = |name: &str| (name == SECRET_FILE_VAR).then(|| "/run/k".to_string());
        assert!(matches!(
            lookup(&with_config, &hostfile, file_var),
            Lookup::File { path, .. } if path == Path::new("/run/k")
        ));
        let both = |name: &str| Some(format!("value of {name}"));
        assert_eq!(
            lookup(&with_config, &hostfile, both),
            Lookup::Value(format!("value of {SECRET_VAR}"))
        );
        let parsed = Hostfile::parse("s0 127.0.0.1:7000\n", "text").unwrap();
        assert_eq!(lookup(&config, &parsed, none), Lookup::Nothing);
    }
}
