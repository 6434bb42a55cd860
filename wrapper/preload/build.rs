//! Generates one forwarder per hook of the shim (`wrapper/src`): the same
//! symbol with the same signature, read from the `hook! { unsafe fn ... }`
//! declarations, so the list of intercepted functions has one home.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

struct Hook {
    name: String,
    params: Vec<(String, String)>,
    ret: String,
}

/// Splits `a: T, b: U<V, W>` at top-level commas.
fn split_params(text: &str) -> Vec<(String, String)> {
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
            let p = current.trim();
            if !p.is_empty() {
                let (name, ty) = p
                    .split_once(':')
                    .unwrap_or_else(|| panic!("parameter `name: type`, got {p:?} in {text:?}"));
                out.push((name.trim().to_string(), ty.trim().to_string()));
            }
            current.clear();
        } else {
            current.push(ch);
        }
    }
    out
}

/// The index of the `)` that closes the `(` at `open`.
fn matching_close(text: &str, open: usize) -> usize {
    let mut depth = 0;
    for (i, ch) in text[open..].char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return open + i;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses in {text:?}")
}

fn without_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse(file: &Path, hooks: &mut Vec<Hook>) {
    let source = without_comments(&std::fs::read_to_string(file).expect("read hook source"));
    let mut rest = source.as_str();
    while let Some(at) = rest.find("hook! {") {
        rest = &rest[at + "hook! {".len()..];
        let body = rest.trim_start();
        let body = body.strip_prefix("unsafe fn").unwrap_or_else(|| {
            panic!("{}: `hook! {{` not followed by `unsafe fn`", file.display())
        });
        let open = body.find('(').expect("(");
        let name = body[..open].trim().to_string();
        let close = matching_close(body, open);
        if name.starts_with('$') {
            // Inside a `macro_rules!` that stamps out a family of hooks:
            // see `parse_hook_families`.
            continue;
        }
        let params = split_params(&body[open + 1..close]);
        let after = &body[close + 1..];
        let arrow = after.find("=>").expect("=> hook_fn");
        let ret = after[..arrow].trim();
        let ret = ret.strip_prefix("->").unwrap_or("()").trim().to_string();
        hooks.push(Hook { name, params, ret });
    }
    parse_hook_families(&source, hooks);
}

/// Hook families: `macro_rules! family { ... unsafe fn $name(FIXED,
/// $($arg: $ty),*) -> $ret ...}` invoked as `family! { name => hook_fn(ARGS)
/// -> RET, answer; ... }`.
fn parse_hook_families(source: &str, hooks: &mut Vec<Hook>) {
    let mut rest = source;
    while let Some(at) = rest.find("macro_rules! ") {
        rest = &rest[at + "macro_rules! ".len()..];
        let family = rest[..rest
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .unwrap()]
            .to_string();
        let Some(sig) = rest.find("unsafe fn $name(") else {
            continue;
        };
        let fixed_text = &rest[sig + "unsafe fn $name(".len()..];
        let fixed_text = &fixed_text[..fixed_text.find("$($arg").expect("$($arg: $ty),*")];
        let fixed = split_params(fixed_text.trim().trim_end_matches(','));
        let invocation = format!("{family}! {{");
        let start = source.find(&invocation).expect("family invoked") + invocation.len();
        let end = start + source[start..].find("\n}").expect("end of family");
        for entry in source[start..end].split(';') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (name, rest) = entry.split_once("=>").expect("name => hook");
            let open = rest.find('(').expect("(");
            let close = matching_close(rest, open);
            let mut params = fixed.clone();
            params.extend(split_params(&rest[open + 1..close]));
            let after = &rest[close + 1..];
            let ret = after[after.find("->").expect("->") + 2..after.find(',').expect(",")]
                .trim()
                .to_string();
            hooks.push(Hook {
                name: name.trim().to_string(),
                params,
                ret,
            });
        }
    }
}

/// Types the forwarders spell differently from the hook sources (aliases
/// local to a hook file). Function pointers travel as pointers.
fn abi_type(ty: &str) -> String {
    match ty {
        "Filter" | "Compare" => "*const c_void".to_string(),
        other => other.to_string(),
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let src = manifest.join("../src");
    let mut files: Vec<PathBuf> = std::fs::read_dir(src.join("hooks"))
        .expect("wrapper/src/hooks")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.push(src.join("stdio.rs"));
    files.sort();
    let mut hooks = Vec::new();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        parse(f, &mut hooks);
    }
    println!("cargo:rerun-if-changed={}", src.join("hooks").display());
    let mut names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), hooks.len(), "a hook is declared twice");
    for expected in [
        "open",
        "openat64",
        "read",
        "stat",
        "getxattr",
        "fgetxattr",
        "fopen",
        "execve",
    ] {
        assert!(
            names.contains(&expected),
            "hook {expected} not found in wrapper/src"
        );
    }

    let mut out = String::new();
    for h in &hooks {
        let params: Vec<String> = h
            .params
            .iter()
            .map(|(n, t)| format!("{n}: {}", abi_type(t)))
            .collect();
        let types: Vec<String> = h.params.iter().map(|(_, t)| abi_type(t)).collect();
        let names: Vec<&str> = h.params.iter().map(|(n, _)| n.as_str()).collect();
        // Each path argument with the directory descriptor it is taken
        // against (the nearest `*dirfd` before it), or AT_FDCWD.
        let mut checks = Vec::new();
        let mut dirfd = "libc::AT_FDCWD".to_string();
        for (n, t) in &h.params {
            if n.ends_with("dirfd") && t == "c_int" {
                dirfd = n.clone();
            }
            if t == "*const c_char" {
                checks.push(format!("crate::touches_mount({dirfd}, {n})"));
            }
            // mkstemp's template is written to, but is a path all the same.
            if t == "*mut c_char" && n == "template" {
                checks.push(format!("crate::touches_mount({dirfd}, {n}.cast_const())"));
            }
        }
        // A PATH search may find a program stored in SFS, which only the
        // shim can run.
        if matches!(h.name.as_str(), "execvp" | "execvpe" | "posix_spawnp") {
            checks.push("crate::path_var_touches_mount()".to_string());
        }
        let route = if checks.is_empty() {
            "let forward_to = SLOT.target(NAMES, || false);".to_string()
        } else {
            format!(
                "// SAFETY: the path arguments are NULL or C strings, as the caller of
    // `{}` promised.
    let forward_to = SLOT.target(NAMES, || unsafe {{ {} }});",
                h.name,
                checks.join(" || ")
            )
        };
        // vfork through a wrapper frame is undefined behaviour; the shim
        // turns it into fork, and so does the forwarder before the shim is
        // loaded.
        let real = if h.name == "vfork" { "fork" } else { &h.name };
        let ret = if h.ret == "()" {
            String::new()
        } else {
            format!(" -> {}", h.ret)
        };
        let fn_type = format!("unsafe extern \"C\" fn({}){ret}", types.join(", "));
        writeln!(
            out,
            "#[no_mangle]
pub unsafe extern \"C\" fn {name}({params}){ret} {{
    // The names live in the code, not in the slot: a slot is all zeros
    // (`.bss`), so loading this library relocates and touches none of them.
    const NAMES: crate::Names = crate::Names {{ shim: c\"{name}\", real: c\"{real}\" }};
    static SLOT: crate::Slot = crate::Slot::new();
    {route}
    // SAFETY: `forward_to` is `{name}` of the shim or `{real}` of the next
    // library, both with this C signature.
    unsafe {{ std::mem::transmute::<*mut c_void, {fn_type}>(forward_to)({args}) }}
}}
",
            name = h.name,
            params = params.join(", "),
            args = names.join(", "),
        )
        .unwrap();
    }
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("forwarders.rs");
    std::fs::write(dest, out).unwrap();

    // Start-up cost: a compact relocation table (glibc >= 2.36), and the
    // unwinder linked in (libgcc_eh) so that loading this library does not
    // also load libgcc_s.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,pack-relative-relocs");
    println!("cargo:rustc-link-lib=static=gcc_eh");
}
