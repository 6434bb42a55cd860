//! Builds `libsfs_preload.so`, the LD_PRELOAD entry library, in C: one
//! forwarder per hook of the shim (`wrapper/src`), the same symbol with
//! the same signature, read from the `hook! { unsafe fn ... }` declarations
//! so the list of intercepted functions has one home, plus `entry.c` (the
//! routing and the loading of the shim). Why C: `src/lib.rs`.

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

/// The C type of a hook's parameter or result, as the forwarders declare
/// it: pointers of any kind are `void *` (a forwarder only passes them on),
/// integers keep their width. An unknown type stops the build.
fn c_type(ty: &str) -> &'static str {
    // Function pointers (scandir's filter and compare, glob's errfunc) too.
    if ty.starts_with('*') || matches!(ty, "Filter" | "Compare" | "GlobErr") {
        return "void *";
    }
    match ty {
        "()" => "void",
        "c_int" | "pid_t" => "int",
        "c_uint" | "mode_t" | "uid_t" | "gid_t" | "socklen_t" => "unsigned int",
        "c_long" | "off_t" | "ssize_t" => "long",
        "c_ulong" | "size_t" | "libc::dev_t" => "unsigned long",
        other => {
            panic!("hook type {other:?}: add its C type to c_type in wrapper/preload/build.rs")
        }
    }
}

/// The forwarders, in C: each calls the shim's function of the same name
/// when the shim is loaded; before that, loads the shim if a path argument
/// is under the mount, and otherwise calls the next library's function.
fn forwarders(hooks: &[Hook]) -> String {
    let mut out = String::from(
        "/* Generated by wrapper/preload/build.rs from the shim's hook list. */\n\
         #include \"entry.h\"\n\n",
    );
    for h in hooks {
        let params: Vec<String> = h
            .params
            .iter()
            .map(|(n, t)| format!("{} {n}", c_type(t)))
            .collect();
        let types: Vec<&str> = h.params.iter().map(|(_, t)| c_type(t)).collect();
        let names: Vec<&str> = h.params.iter().map(|(n, _)| n.as_str()).collect();
        // Each path argument with the directory descriptor it is taken
        // against (the nearest `*dirfd` before it), or AT_FDCWD.
        let mut checks = Vec::new();
        let mut dirfd = "SFS_AT_FDCWD".to_string();
        for (n, t) in &h.params {
            if n.ends_with("dirfd") && t == "c_int" {
                dirfd = n.clone();
            }
            // mkstemp's template is written to, but is a path all the same.
            if t == "*const c_char" || (t == "*mut c_char" && n == "template") {
                checks.push(format!("sfs_touches_mount({dirfd}, (const char *){n})"));
            }
        }
        // A PATH search may find a program stored in SFS, which only the
        // shim can run.
        if matches!(h.name.as_str(), "execvp" | "execvpe" | "posix_spawnp") {
            checks.push("sfs_path_var_touches_mount()".to_string());
        }
        // A Unix socket named by a path inside the mount.
        if matches!(h.name.as_str(), "bind" | "connect") {
            checks.push("sfs_sockaddr_touches_mount(addr, len)".to_string());
        }
        let touches = if checks.is_empty() {
            "0".to_string()
        } else {
            checks.join(" || ")
        };
        // vfork through a forwarder's frame is undefined behaviour; the shim
        // turns it into fork, and so does the forwarder before it is loaded.
        let real = if h.name == "vfork" { "fork" } else { &h.name };
        let ret = c_type(&h.ret);
        let call = format!(
            "(({ret} (*)({}))f)({})",
            if types.is_empty() {
                "void".to_string()
            } else {
                types.join(", ")
            },
            names.join(", ")
        );
        let body = if ret == "void" {
            format!("{call};")
        } else {
            format!("return {call};")
        };
        writeln!(
            out,
            "__attribute__((visibility(\"default\"))) {ret} {name}({params}) {{
    static struct sfs_slot slot;
    void *f = sfs_shim_fn(&slot, \"{name}\");
    if (!f)
        f = sfs_may_route() && ({touches}) ? sfs_load_for(&slot, \"{name}\", \"{real}\")
                                          : sfs_real_fn(&slot, \"{real}\");
    {body}
}}
",
            name = h.name,
            params = if params.is_empty() {
                "void".to_string()
            } else {
                params.join(", ")
            },
        )
        .unwrap();
    }
    out
}

/// Compiles the entry library with the system C compiler into `out`.
fn compile(manifest: &Path, generated: &Path, out: &Path) {
    let default_mount = sfs_global::config::Config::default().mountdir;
    let compiler = cc::Build::new().get_compiler();
    let mut cmd = compiler.to_command();
    // -Os and one read-only + one writable segment: fewer pages mapped and
    // touched at every process start (docs/performance.md, "Shim overhead").
    cmd.args([
        "-shared",
        "-fPIC",
        "-Os",
        "-g",
        "-fvisibility=hidden",
        "-fno-builtin",
        "-pthread",
    ])
    .args(["-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror"])
    .arg(format!("-DSFS_DEFAULT_MOUNTDIR=\"{default_mount}\""))
    .arg("-I")
    .arg(manifest)
    .arg(manifest.join("entry.c"))
    .arg(generated)
    .args([
        "-Wl,-soname,libsfs_preload.so",
        "-Wl,-z,noseparate-code",
        "-Wl,-z,pack-relative-relocs",
        "-ldl",
    ])
    .arg("-o")
    .arg(out);
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("running the C compiler {cmd:?}: {e} (scripts/setup.sh installs gcc)")
    });
    assert!(
        status.success(),
        "compiling libsfs_preload.so failed: {cmd:?}"
    );
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

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let generated = out_dir.join("forwarders.c");
    std::fs::write(&generated, forwarders(&hooks)).unwrap();
    for f in ["entry.c", "entry.h"] {
        println!("cargo:rerun-if-changed={}", manifest.join(f).display());
    }
    let library = out_dir.join("libsfs_preload.so");
    compile(&manifest, &generated, &library);
    // Where cargo puts the cdylibs it builds, as it would for this one:
    // target/<profile>/deps/, next to the shim (libsfs_shim.so) of the same
    // build — what tests load — and target/<profile>/, next to the
    // workspace's binaries, where `sfs exec` and sfs_bench look. OUT_DIR is
    // target/<profile>/build/<crate>-<hash>/out.
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .expect("OUT_DIR is inside target/<profile>/build/");
    for dir in [profile_dir.join("deps"), profile_dir.to_path_buf()] {
        // Replace, never write through: a running process may map it.
        let staging = dir.join(".libsfs_preload.so.new");
        std::fs::copy(&library, &staging).expect("copying libsfs_preload.so");
        std::fs::rename(&staging, dir.join("libsfs_preload.so"))
            .expect("placing libsfs_preload.so");
    }
    println!(
        "cargo:rustc-env=SFS_PRELOAD_SO={}",
        profile_dir.join("deps/libsfs_preload.so").display()
    );
}
