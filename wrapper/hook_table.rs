//! Reads `wrapper/hooks.table`, the list of interposed functions (its
//! header says the format). Included by both build scripts — the shim's
//! (`wrapper/build.rs`, the exported Rust symbols) and the entry library's
//! (`wrapper/preload/build.rs`, the C forwarders) — so both are made from
//! one reading of one list.

/// What a parameter is to the routing, beyond its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Plain,
    /// A path, taken against the nearest [`Role::DirFd`] before it.
    Path,
    /// A path the call also writes (mkstemp's template).
    MutPath,
    /// The directory the paths after it are relative to.
    DirFd,
    /// An AF_UNIX address; the next parameter is its length.
    UnixAddr,
}

pub struct Param {
    pub name: String,
    /// The Rust type the handler declares.
    pub ty: String,
    pub role: Role,
}

pub struct Hook {
    /// The symbol exported (and the next library's function it stands for).
    pub name: String,
    pub params: Vec<Param>,
    /// The Rust result type; `()` for none.
    pub ret: String,
    /// The handler's path below the crate root (`hooks::open::sfs_open`).
    pub handler: String,
    /// The call looks its program up in `$PATH`.
    pub searches_path: bool,
}

/// Splits `a: T, b: U<V, W>` at top-level commas.
fn split_params(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for ch in text.chars().chain(std::iter::once(',')) {
        match ch {
            '(' | '<' | '[' => depth += 1,
            ')' | '>' | ']' => depth -= 1,
            _ => {}
        }
        if ch == ',' && depth == 0 {
            if !current.trim().is_empty() {
                out.push(current.trim().to_string());
            }
            current.clear();
        } else {
            current.push(ch);
        }
    }
    out
}

fn param(text: &str, at: &str) -> Param {
    let (name, ty) = text
        .split_once(':')
        .unwrap_or_else(|| panic!("{at}: parameter `name: Type`, got {text:?}"));
    let (ty, role) = match ty.trim() {
        "Path" => ("*const c_char", Role::Path),
        "MutPath" => ("*mut c_char", Role::MutPath),
        "DirFd" => ("c_int", Role::DirFd),
        "UnixAddr" => ("*const sockaddr", Role::UnixAddr),
        other => (other, Role::Plain),
    };
    Param {
        name: name.trim().to_string(),
        ty: ty.to_string(),
        role,
    }
}

/// Every hook of the table, in its order. Panics naming the line on
/// anything malformed, a symbol listed twice, or a `UnixAddr` without a
/// length after it.
pub fn parse(text: &str) -> Vec<Hook> {
    let mut hooks: Vec<Hook> = Vec::new();
    let mut module: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let at = format!("wrapper/hooks.table:{}", n + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(m) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            module = Some(m.to_string());
            continue;
        }
        let module = module
            .as_deref()
            .unwrap_or_else(|| panic!("{at}: a hook before the first [module]"));
        let open = line.find('(').unwrap_or_else(|| panic!("{at}: no `(`"));
        let close = line.rfind(')').unwrap_or_else(|| panic!("{at}: no `)`"));
        let name = line[..open].trim().to_string();
        let params: Vec<Param> = split_params(&line[open + 1..close])
            .iter()
            .map(|p| param(p, &at))
            .collect();
        let (sig, handler) = line[close + 1..]
            .split_once("=>")
            .unwrap_or_else(|| panic!("{at}: no `=> handler`"));
        let ret = match sig.trim().strip_prefix("->") {
            Some(r) => r.trim().to_string(),
            None if sig.trim().is_empty() => "()".to_string(),
            None => panic!("{at}: expected `-> Result` or nothing before `=>`"),
        };
        let (handler, searches_path) = match handler.trim().split_once('[') {
            Some((h, "searches PATH]")) => (h.trim(), true),
            Some((_, flag)) => panic!("{at}: unknown flag [{flag}"),
            None => (handler.trim(), false),
        };
        for (i, p) in params.iter().enumerate() {
            if p.role == Role::UnixAddr {
                assert!(
                    params.get(i + 1).is_some_and(|l| l.ty == "socklen_t"),
                    "{at}: a UnixAddr is followed by its length (socklen_t)"
                );
            }
        }
        assert!(
            !hooks.iter().any(|h| h.name == name),
            "{at}: {name} is listed twice"
        );
        hooks.push(Hook {
            name,
            params,
            ret,
            handler: format!("{module}::{handler}"),
            searches_path,
        });
    }
    hooks
}
