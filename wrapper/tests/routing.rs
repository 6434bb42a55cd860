//! The rule "does this path argument lead under the mount?" is written
//! twice: in C in the entry library (`wrapper/preload/entry.c`,
//! `sfs_touches_mount`), which decides whether a call loads the shim at
//! all, and in Rust in the shim (`paths::resolve`), which decides whether
//! it takes the call. Where the C side says no and the Rust side would say
//! yes, a call on an SFS path goes to the kernel instead. This test puts
//! the same cases to both: the C side in its real setting (a process
//! under `LD_PRELOAD` whose shim cannot be loaded, so a path it routes
//! shows as the load's complaint), the Rust side in this process.

use sfs_shim::paths::resolve;
use sfs_shim::state::Settings;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

/// `base` (below the test's root directory) is the directory a relative
/// `path` is taken against; `{M}` in `path` is the mount, `{R}` the
/// mount's parent.
const CASES: &[(&str, &str, bool)] = &[
    // Absolute paths.
    ("r", "{M}", true),
    ("r", "{M}/", true),
    ("r", "{M}/a/b", true),
    ("r", "{M}x", false),
    ("r", "{M}x/f", false),
    ("r", "{M}/../mnt/a", true),
    ("r", "{M}/./a", true),
    ("r", "{M}//a", true),
    ("r", "{R}/other/../mnt/a", true),
    ("r", "{R}/./mnt", true),
    ("r", "{R}/other", false),
    ("r", "{M}/..", false),
    ("r", "{M}/a/../..", false),
    ("r", "{M}/../mntx/f", false),
    ("r", "/{M}", true),
    ("r", "/", false),
    // Relative, from the mount's parent.
    ("r", "mnt", true),
    ("r", "mnt/a", true),
    ("r", "./mnt/a", true),
    ("r", "mnt//a", true),
    ("r", "mntx", false),
    ("r", "other", false),
    ("r", "other/../mnt", true),
    ("r", "mnt/..", false),
    ("r", "mnt/../mnt/f", true),
    // Relative, from a sibling of the mount and below it.
    ("r/other", "../mnt/a", true),
    ("r/other", "../mntx", false),
    ("r/other", "./../mnt", true),
    ("r/other", "mnt", false),
    ("r/other", "sub", false),
    ("r/other/sub", "../../mnt", true),
    ("r/other/sub", "../../mnt/../other", false),
    // Relative, from further up.
    ("", "r/mnt/a", true),
    ("", "r/./mnt", true),
    ("", "r/other", false),
    ("", "r/mntx/mnt", false),
];

/// Runs one call on `path` in a process under the entry library and says
/// whether the library tried to load the shim. `dir_fd`: the call takes
/// the path against a descriptor of `base` (python's fstatat); otherwise
/// `base` is the working directory (coreutils' `stat`).
fn c_routes(root: &Path, mount: &str, base: &Path, path: &str, dir_fd: bool) -> bool {
    let probe = "import os, sys\n\
                 fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n\
                 try:\n    os.stat(sys.argv[2], dir_fd=fd, follow_symlinks=False)\n\
                 except OSError:\n    pass\n";
    let mut cmd = match dir_fd {
        true => {
            let mut python = Command::new("python3");
            python.args(["-I", "-S", "-c", probe]).arg(base);
            python
        }
        false => {
            let mut stat = Command::new("stat");
            stat.arg("--printf=");
            stat
        }
    };
    let out = cmd
        .arg(path)
        .current_dir(base)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LD_PRELOAD", sfs_preload::LIBRARY)
        .env("SFS_MOUNTDIR", mount)
        .env("SFS_SHIM", root.join("no-shim-here.so"))
        .output()
        .expect("running python3 (scripts/setup.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // `stat` fails on a path that does not exist; what it printed says
    // whether it got that far.
    assert!(
        out.status.success() || stderr.contains("stat: cannot statx"),
        "probe of {path:?} failed: {stderr}"
    );
    stderr.contains("cannot load the SFS shim")
}

#[test]
fn the_entry_library_and_the_shim_route_the_same_paths() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    for d in ["r/mnt", "r/mntx", "r/other/sub"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let parent = root.join("r").to_str().unwrap().to_string();
    let mount = format!("{parent}/mnt");
    let settings = Settings {
        mount: mount.clone(),
        config_path: None,
        hostfile_path: None,
    };
    let mut wrong = Vec::new();
    for &(base, path, inside) in CASES {
        let base = root.join(base);
        let path = path.replace("{M}", &mount).replace("{R}", &parent);
        let dir = std::fs::File::open(&base).unwrap();
        let rust = resolve(&settings, dir.as_raw_fd(), &path).is_some();
        let mut answers = vec![("rust", rust)];
        answers.push((
            "C, against a descriptor",
            c_routes(&root, &mount, &base, &path, true),
        ));
        if !path.starts_with('/') {
            answers.push((
                "C, against the working directory",
                c_routes(&root, &mount, &base, &path, false),
            ));
        }
        for (who, said) in answers {
            if said != inside {
                wrong.push(format!(
                    "{who}: {path:?} from {} is {}inside",
                    base.display(),
                    if said { "" } else { "not " }
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "routing differs:\n{}", wrong.join("\n"));
}
