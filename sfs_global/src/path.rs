//! Normalisation of paths inside the SFS namespace.
//!
//! SFS names every entry by its normalised absolute path inside the mount
//! (`/dir/file`, no `.`/`..`, no doubled or trailing `/`). Two spellings of
//! one file must map to one key on one server, so every component that takes a
//! path from outside calls [`normalize`] first. Paths are taken lexically, as
//! GekkoFS does: symlinks inside SFS are not followed by normalisation.

use crate::error::{Errno, SfsError, SfsResult};
use std::borrow::Cow;

/// Linux's PATH_MAX: the longest path *argument* of a call, counting its
/// NUL (the shim answers ENAMETOOLONG from 4096 bytes), and the longest
/// symlink target.
pub const PATH_MAX: usize = 4096;
/// The longest whole path inside SFS. Longer than [`PATH_MAX`]: as on any
/// Linux file system, a path argument is limited, not the path of an entry
/// (a 4,095-byte path relative to a working directory deep in the tree
/// names an entry whose whole path is longer).
pub const SFS_PATH_MAX: usize = 16 * PATH_MAX;
/// Longest single name SFS accepts (bytes), as Linux's NAME_MAX.
pub const NAME_MAX: usize = 255;

/// Names are bytes in POSIX, strings in SFS (its protocol and keys are
/// UTF-8). A byte of a program's name that is not part of valid UTF-8 is
/// carried as one code point of the private-use range U+10FF80..=U+10FFFF
/// (the byte's value above U+10FF00), and so is each byte of a name's own
/// character in that range, so that every byte string maps to exactly one
/// string and back ([`escape_bytes`], [`unescape`]). Names that are valid
/// UTF-8 without those characters (all but very odd ones) are unchanged.
const ESCAPE_BASE: u32 = 0x10_FF00;
const ESCAPED_FIRST: u32 = ESCAPE_BASE + 0x80;

fn is_escape(c: char) -> bool {
    (ESCAPED_FIRST..=ESCAPE_BASE + 0xFF).contains(&(c as u32))
}

/// Whether `text` holds a character of the escape range. Every such
/// character's UTF-8 starts with the byte 0xF4 (U+100000..U+10FFFF), so
/// the common answer costs one byte search and no decoding (this runs
/// for every path argument of the shim).
fn has_escapes(text: &str) -> bool {
    text.as_bytes().contains(&0xF4) && text.chars().any(is_escape)
}

fn push_escaped(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        // Escaped bytes are never ASCII (>= 0x80): their code points lie in
        // U+10FF80..=U+10FFFF, valid scalar values.
        out.push(char::from_u32(ESCAPE_BASE + u32::from(b)).unwrap_or(char::REPLACEMENT_CHARACTER));
    }
}

/// The SFS string of a program's path or name `bytes` (see [`ESCAPE_BASE`]).
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if !has_escapes(text) {
            return Cow::Borrowed(text);
        }
    }
    let mut out = String::with_capacity(bytes.len() * 2);
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(text) => (text, 0),
            Err(e) => {
                let valid = std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or_default();
                (valid, e.error_len().unwrap_or(rest.len() - e.valid_up_to()))
            }
        };
        for c in valid.chars() {
            if is_escape(c) {
                push_escaped(&mut out, c.encode_utf8(&mut [0; 4]).as_bytes());
            } else {
                out.push(c);
            }
        }
        push_escaped(&mut out, &rest[valid.len()..valid.len() + bad]);
        rest = &rest[valid.len() + bad..];
    }
    Cow::Owned(out)
}

/// The program's bytes of an SFS string ([`escape_bytes`] reversed).
pub fn unescape(text: &str) -> Cow<'_, [u8]> {
    if !has_escapes(text) {
        return Cow::Borrowed(text.as_bytes());
    }
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        if is_escape(c) {
            out.push((c as u32 - ESCAPE_BASE) as u8);
        } else {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
    }
    Cow::Owned(out)
}

/// The length in the program's bytes of an SFS name or path (what NAME_MAX
/// and PATH_MAX count): an escaped byte is one.
pub fn program_len(text: &str) -> usize {
    if !has_escapes(text) {
        return text.len();
    }
    text.len() - 3 * text.chars().filter(|&c| is_escape(c)).count()
}

/// Normalises an absolute path inside the mount (`/` is the mount's root).
///
/// Refuses relative paths and embedded NULs (EINVAL), names longer than
/// NAME_MAX and paths longer than [`SFS_PATH_MAX`] (ENAMETOOLONG), and `..` that would
/// climb above the root of the mount (EINVAL: the path escapes the mount).
pub fn normalize(path: &str) -> SfsResult<String> {
    if !path.starts_with('/') {
        return Err(SfsError::invalid(format!("{path:?}: not an absolute path")));
    }
    if path.contains('\0') {
        return Err(SfsError::invalid("path contains a NUL byte"));
    }
    if path.len() > SFS_PATH_MAX {
        return Err(SfsError::new(
            Errno::ENAMETOOLONG,
            format!("path of {} bytes is longer than {SFS_PATH_MAX}", path.len()),
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(SfsError::invalid(format!(
                        "{path:?}: `..` escapes the mount"
                    )));
                }
            }
            name => {
                if name.len() > NAME_MAX && program_len(name) > NAME_MAX {
                    return Err(SfsError::new(
                        Errno::ENAMETOOLONG,
                        format!(
                            "name of {} bytes is longer than {NAME_MAX}",
                            program_len(name)
                        ),
                    ));
                }
                parts.push(name)
            }
        }
    }
    if parts.is_empty() {
        return Ok("/".to_string());
    }
    let mut out = String::with_capacity(path.len());
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    Ok(out)
}

/// Normalises a host path lexically (no symlinks resolved) without the
/// escape check: `/a/../..` is `/`, as the kernel treats it.
pub fn normalize_host(path: &str) -> Option<String> {
    normalize_host_cow(path).map(Cow::into_owned)
}

/// Is an absolute host path already in normal form (no empty, `.` or `..`
/// component, no trailing `/` except for the root itself)?
fn is_normal_host(path: &str) -> bool {
    path == "/"
        || (path.starts_with('/')
            && !path.ends_with('/')
            && path[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."))
}

/// [`normalize_host`] without an allocation for a path that is already
/// normal (the common case of every path a program passes).
fn normalize_host_cow(path: &str) -> Option<Cow<'_, str>> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    if is_normal_host(path) {
        return Some(Cow::Borrowed(path));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    Some(Cow::Owned(if parts.is_empty() {
        "/".to_string()
    } else {
        parts.iter().fold(String::new(), |mut s, p| {
            s.push('/');
            s.push_str(p);
            s
        })
    }))
}

/// Maps a host path to the SFS path inside `mountdir`, or `None` when the
/// path is outside the mount (after lexical normalisation, so
/// `/mnt/sfs/../etc` is outside).
pub fn strip_mount(host_path: &str, mountdir: &str) -> Option<String> {
    let host = normalize_host_cow(host_path)?;
    let mount = normalize_host_cow(mountdir)?;
    if host == mount {
        return Some("/".to_string());
    }
    let rest = host.strip_prefix(&*mount)?;
    if mount == "/" {
        return Some(host.into_owned());
    }
    if rest.starts_with('/') {
        Some(rest.to_string())
    } else {
        None
    }
}

/// Splits a normalised path into (parent, name); the root has no parent.
pub fn split_parent(path: &str) -> Option<(&str, &str)> {
    if path == "/" {
        return None;
    }
    let idx = path.rfind('/')?;
    let parent = if idx == 0 { "/" } else { &path[..idx] };
    Some((parent, &path[idx + 1..]))
}

/// Joins a normalised directory and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// True if `path` is `dir` itself or lies below it (both normalised).
pub fn is_within(path: &str, dir: &str) -> bool {
    dir == "/"
        || path == dir
        || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_that_are_not_utf8_map_to_one_string_and_back() {
        assert!(matches!(
            escape_bytes(b"plain/\xc3\xa9t\xc3\xa9"),
            Cow::Borrowed(_)
        ));
        let latin1 = b"caf\xe9";
        let escaped = escape_bytes(latin1);
        assert_eq!(escaped, "caf\u{10ffe9}");
        assert_eq!(program_len(&escaped), 4);
        assert_eq!(&*unescape(&escaped), latin1);
        // A name's own character of the escape range is escaped too, so
        // it cannot be taken for an escaped byte.
        let odd = "x\u{10ff80}".as_bytes();
        let escaped = escape_bytes(odd);
        assert_eq!(program_len(&escaped), odd.len());
        assert_eq!(&*unescape(&escaped), odd);
        assert_ne!(escaped, escape_bytes(b"x\x80"));
        // NAME_MAX counts the program's bytes.
        let long = [0xffu8; NAME_MAX];
        let path = format!("/{}", escape_bytes(&long));
        assert!(normalize(&path).is_ok());
        let longer = format!("/{}", escape_bytes(&[0xffu8; NAME_MAX + 1]));
        assert_eq!(normalize(&longer).unwrap_err().errno, Errno::ENAMETOOLONG);
    }

    proptest::proptest! {
        #[test]
        fn every_byte_string_escapes_and_unescapes_to_itself(bytes in proptest::collection::vec(1u8..=255, 0..64)) {
            let escaped = escape_bytes(&bytes);
            proptest::prop_assert_eq!(&*unescape(&escaped), &bytes[..]);
            proptest::prop_assert_eq!(program_len(&escaped), bytes.len());
            if let Ok(text) = std::str::from_utf8(&bytes) {
                if !text.chars().any(is_escape) {
                    proptest::prop_assert_eq!(&*escaped, text);
                }
            }
        }
    }

    #[test]
    fn normalises_the_usual_spellings() {
        for (input, want) in [
            ("/", "/"),
            ("//", "/"),
            ("/a/", "/a"),
            ("/a//b/./c/", "/a/b/c"),
            ("/a/b/../c", "/a/c"),
            ("/a/..", "/"),
            ("/./.", "/"),
        ] {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn refuses_escapes_and_bad_names() {
        assert_eq!(normalize("/..").unwrap_err().errno, Errno::EINVAL);
        assert_eq!(normalize("/a/../..").unwrap_err().errno, Errno::EINVAL);
        assert_eq!(normalize("rel").unwrap_err().errno, Errno::EINVAL);
        assert_eq!(normalize("/a\0b").unwrap_err().errno, Errno::EINVAL);
        let long = format!("/{}", "x".repeat(256));
        assert_eq!(normalize(&long).unwrap_err().errno, Errno::ENAMETOOLONG);
        let deep = "/abc".repeat(SFS_PATH_MAX / 4 + 1);
        assert_eq!(normalize(&deep).unwrap_err().errno, Errno::ENAMETOOLONG);
        // Longer than a path argument may be, as a whole path may.
        let long_whole = "/abc".repeat(1100);
        assert_eq!(normalize(&long_whole).unwrap(), long_whole);
    }

    #[test]
    fn strips_the_mount() {
        assert_eq!(strip_mount("/mnt/sfs", "/mnt/sfs").as_deref(), Some("/"));
        assert_eq!(
            strip_mount("/mnt/sfs/a/b", "/mnt/sfs/").as_deref(),
            Some("/a/b")
        );
        assert_eq!(strip_mount("/mnt/sfs/../etc", "/mnt/sfs"), None);
        assert_eq!(strip_mount("/mnt/sfsx/a", "/mnt/sfs"), None);
        assert_eq!(
            strip_mount("/mnt/other/../sfs/x", "/mnt/sfs").as_deref(),
            Some("/x")
        );
        assert_eq!(strip_mount("relative", "/mnt/sfs"), None);
    }

    #[test]
    fn parents_and_joins() {
        assert_eq!(split_parent("/a"), Some(("/", "a")));
        assert_eq!(split_parent("/a/b/c"), Some(("/a/b", "c")));
        assert_eq!(split_parent("/"), None);
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/a", "x"), "/a/x");
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(!is_within("/ab", "/a"));
        assert!(is_within("/ab", "/"));
    }

    #[test]
    fn host_paths_already_normal_are_taken_as_they_are() {
        for (input, want) in [
            ("/", Some("/")),
            ("/a/b", Some("/a/b")),
            ("/a/b/", Some("/a/b")),
            ("//a", Some("/a")),
            ("/a/./b", Some("/a/b")),
            ("/a/../..", Some("/")),
            ("/..a/b.", Some("/..a/b.")),
            ("a/b", None),
            ("/a\0", None),
        ] {
            assert_eq!(normalize_host(input).as_deref(), want, "{input}");
            let borrowed = matches!(normalize_host_cow(input), Some(Cow::Borrowed(_)));
            assert_eq!(borrowed, want == Some(input), "{input}");
        }
    }

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(".".to_string()),
            Just("..".to_string()),
            Just("".to_string()),
            "[a-c]{1,3}",
        ]
    }

    proptest! {
        /// Normalisation is idempotent, yields a canonical form, and agrees
        /// with a straightforward stack model of the path.
        #[test]
        fn normalisation_matches_a_stack_model(parts in proptest::collection::vec(component(), 0..12)) {
            let path = format!("/{}", parts.join("/"));
            // The host form: `..` at the root stays at the root.
            let mut host: Vec<&str> = Vec::new();
            for p in &parts {
                match p.as_str() {
                    "" | "." => {}
                    ".." => { host.pop(); }
                    n => host.push(n),
                }
            }
            prop_assert_eq!(normalize_host(&path), Some(format!("/{}", host.join("/"))));
            let mut stack: Vec<&str> = Vec::new();
            let mut escaped = false;
            for p in &parts {
                match p.as_str() {
                    "" | "." => {}
                    ".." => if stack.pop().is_none() { escaped = true; break; },
                    n => stack.push(n),
                }
            }
            match normalize(&path) {
                Err(e) => { prop_assert!(escaped); prop_assert_eq!(e.errno, Errno::EINVAL); }
                Ok(n) => {
                    prop_assert!(!escaped);
                    let want = format!("/{}", stack.join("/"));
                    prop_assert_eq!(&n, &want);
                    prop_assert_eq!(normalize(&n).unwrap(), n.clone());
                    prop_assert!(!n.contains("//") && (n == "/" || !n.ends_with('/')));
                    if let Some((parent, name)) = split_parent(&n) {
                        prop_assert_eq!(join(parent, name), n);
                    }
                }
            }
        }
    }
}
