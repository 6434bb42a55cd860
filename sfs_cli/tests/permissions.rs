//! Permissions against a second user of the job (docs/semantics.md,
//! "Permissions"): servers started by root, a tree made by root with the
//! modes below, and uid/gid 65534 (`nobody`, no supplementary groups)
//! holding the job secret, through the CLI (over gRPC) and through the shim
//! (over the lean RPC). Every refusal here was a success before the
//! servers checked permissions.

mod common;

use common::{describe as text, Cluster, SFS};
use sfs_global::config::MetadataRpc;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The uid and gid of the second user.
const OTHER: &str = "65534";

/// What root makes before the other user comes (`$1` is the mount):
///
/// | path | mode | for |
/// |---|---|---|
/// | /private, /private/f | 0700 dir | listing, reading, creating inside |
/// | /private/sub, /private/sub/g | 0777 dir, 0644 | search above the parent |
/// | /secret.txt | 0600 | reading, chmod, chown |
/// | /shared.txt | 0644 | writing, truncating; unlink from the 0755 root |
/// | /tmp | 1777 | sticky: root's /tmp/rootfile (0666) |
/// | /open | 0777 | the other user's own files; root's /open/victim (0666) |
/// | /ro | 0755 | rename into, create in |
/// | /open/script | 0644 | exec without any x bit (root too) |
const FIXTURE: &str = r#"
set -e
M=$1
mkdir $M/private; echo top > $M/private/f
mkdir $M/private/sub; chmod 777 $M/private/sub; echo g > $M/private/sub/g
chmod 700 $M/private
echo secret > $M/secret.txt; chmod 600 $M/secret.txt
echo shared > $M/shared.txt; chmod 644 $M/shared.txt
mkdir $M/tmp; chmod 1777 $M/tmp
echo r > $M/tmp/rootfile; chmod 666 $M/tmp/rootfile
mkdir $M/open; chmod 777 $M/open
echo v > $M/open/victim; chmod 666 $M/open/victim
mkdir $M/ro; chmod 755 $M/ro
printf '#!/bin/sh\necho ran\n' > $M/open/script; chmod 644 $M/open/script
"#;

/// A cluster whose files the other user can reach: the test directory,
/// config and hostfile readable, copies of `sfs` and of the preload and
/// shim libraries in it (the build directory may be under root's home),
/// and the fixture made by root.
struct Setup {
    cluster: Cluster,
    sfs: PathBuf,
    preload: PathBuf,
    /// The job secret, given to the other user as `SFS_SECRET` (the secret
    /// file stays root's and private).
    secret: String,
}

impl Setup {
    fn new(rpc: MetadataRpc) -> Option<Setup> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to run a second uid (CI runs as root)");
            return None;
        }
        let cluster = Cluster::start_with(2, |c| c.metadata_rpc = rpc);
        let dir = cluster.path().to_path_buf();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for file in [&cluster.hostfile_path, &cluster.config_path] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let copy = |from: &Path, name: &str| {
            let to = dir.join(name);
            std::fs::copy(from, &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
            to
        };
        let artifacts = sfs_testkit::artifacts();
        let sfs = copy(Path::new(SFS), "sfs-copy");
        let preload = copy(&artifacts.preload, "libsfs_preload.so");
        copy(&artifacts.shim, "libsfs_shim.so");
        let secret = std::fs::read_to_string(dir.join("hostfile.secret"))
            .unwrap()
            .trim()
            .to_string();
        let setup = Setup {
            cluster,
            sfs,
            preload,
            secret,
        };
        let made = setup.shim(false, FIXTURE);
        assert!(made.status.success(), "fixture: {}", text(&made));
        Some(setup)
    }

    /// `sfs ARGS` as the other user, or as root.
    fn cli(&self, as_other: bool, args: &[&str]) -> Output {
        let mut command = self.command(as_other);
        command.args(args);
        command.output().expect("running sfs")
    }

    /// `bash -c script MOUNT` under the shim, as the other user or root.
    fn shim(&self, as_other: bool, script: &str) -> Output {
        let mut command = self.command(as_other);
        command
            .arg("exec")
            .arg("--preload")
            .arg(&self.preload)
            .args(["--", "bash", "-c", script, "script"])
            .arg(&self.cluster.config.mountdir)
            .current_dir("/")
            .env("SFS_LOG", "warn");
        command.output().expect("running sfs exec")
    }

    fn command(&self, as_other: bool) -> Command {
        let mut command = if as_other {
            let mut c = Command::new("setpriv");
            c.args(["--reuid", OTHER, "--regid", OTHER, "--clear-groups", "--"])
                .arg(&self.sfs);
            c
        } else {
            Command::new(&self.sfs)
        };
        command
            .arg("--config")
            .arg(&self.cluster.config_path)
            .arg("--hostfile")
            .arg(&self.cluster.hostfile_path)
            .env_remove("SFS_SECRET_FILE")
            .env("SFS_SECRET", &self.secret)
            .stdin(Stdio::null());
        command
    }
}

/// Asserts that `out` failed and its error output names `errno` (the CLI
/// prints the errno's name, coreutils its strerror).
fn refused(what: &str, out: &Output, errno: &str) {
    let strerror = match errno {
        "EACCES" => "Permission denied",
        "EPERM" => "Operation not permitted",
        other => panic!("no strerror for {other}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && (stderr.contains(errno) || stderr.contains(strerror)),
        "{what}: expected {errno}: {}",
        text(out)
    );
}

fn succeeded(what: &str, out: &Output) {
    assert!(out.status.success(), "{what}: {}", text(out));
}

#[test]
fn the_cli_enforces_permissions_against_another_user() {
    // The CLI speaks gRPC here: the caller travels in its header.
    let Some(s) = Setup::new(MetadataRpc::Grpc) else {
        return;
    };
    let other = |args: &[&str]| s.cli(true, args);
    refused(
        "ls of a 0700 directory",
        &other(&["ls", "/private"]),
        "EACCES",
    );
    refused(
        "get of a 0600 file",
        &other(&["get", "/secret.txt", "/dev/null"]),
        "EACCES",
    );
    refused(
        "get of a 0644 file below a 0700 directory",
        &other(&["get", "/private/sub/g", "/dev/null"]),
        "EACCES",
    );
    refused(
        "put into a 0755 directory of root's",
        &other(&["put", "/etc/hostname", "/ro/x"]),
        "EACCES",
    );
    refused(
        "put over a 0644 file of root's",
        &other(&["put", "/etc/hostname", "/shared.txt"]),
        "EACCES",
    );
    refused(
        "mkdir in a 0700 directory",
        &other(&["mkdir", "/private/d"]),
        "EACCES",
    );
    refused(
        "rm from the 0755 root",
        &other(&["rm", "/shared.txt"]),
        "EACCES",
    );
    refused(
        "rm of root's file in a sticky directory",
        &other(&["rm", "/tmp/rootfile"]),
        "EPERM",
    );
    // What the mode bits allow still works, and the owner is the caller.
    succeeded("ls /", &other(&["ls", "/"]));
    succeeded(
        "get of a 0644 file",
        &other(&["get", "/shared.txt", "/dev/null"]),
    );
    succeeded(
        "put into a 0777 directory",
        &other(&["put", "/etc/hostname", "/open/mine"]),
    );
    let stat = other(&["stat", "/open/mine"]);
    succeeded("stat", &stat);
    let shown = String::from_utf8_lossy(&stat.stdout);
    assert!(shown.contains("65534"), "owned by the caller: {shown}");
    succeeded(
        "put into a sticky directory",
        &other(&["put", "/etc/hostname", "/tmp/mine"]),
    );
    succeeded("rm of one's own file", &other(&["rm", "/tmp/mine"]));
    // Root passes every check.
    for args in [
        &["ls", "/private"][..],
        &["get", "/secret.txt", "/dev/null"],
        &["rm", "/open/mine"],
    ] {
        succeeded(&format!("root: {args:?}"), &s.cli(false, args));
    }
    // Nothing the refusals touched changed.
    let tmp = s.cli(false, &["ls", "/tmp"]);
    assert!(
        String::from_utf8_lossy(&tmp.stdout).contains("rootfile"),
        "{}",
        text(&tmp)
    );
    let private = s.cli(false, &["ls", "/private"]);
    assert_eq!(
        String::from_utf8_lossy(&private.stdout).trim(),
        "f\nsub",
        "{}",
        text(&private)
    );
}

#[test]
fn the_shim_enforces_permissions_against_another_user() {
    let Some(s) = Setup::new(MetadataRpc::Lean) else {
        return;
    };
    let other = |script: &str| s.shim(true, script);
    refused("ls of a 0700 directory", &other("ls $1/private"), "EACCES");
    refused("cat of a 0600 file", &other("cat $1/secret.txt"), "EACCES");
    // Search permission on every directory above: the files' own modes
    // (0644) and the 0777 parent would let the other user in.
    refused(
        "cat of a 0644 file in a 0700 directory",
        &other("cat $1/private/f"),
        "EACCES",
    );
    refused(
        "stat below a 0700 directory",
        &other("stat $1/private/sub/g"),
        "EACCES",
    );
    refused(
        "create in a 0777 directory below a 0700 one",
        &other("touch $1/private/sub/new"),
        "EACCES",
    );
    refused(
        "unlink in a 0777 directory below a 0700 one",
        &other("rm -f $1/private/sub/g"),
        "EACCES",
    );
    refused(
        "append to a 0644 file",
        &other("echo x >> $1/shared.txt"),
        "EACCES",
    );
    refused(
        "truncate of a 0644 file",
        &other("truncate -s 0 $1/shared.txt"),
        "EACCES",
    );
    refused(
        "chmod of another user's file",
        &other("chmod 777 $1/secret.txt"),
        "EPERM",
    );
    refused(
        "chown of another user's file",
        &other("chown 65534 $1/secret.txt"),
        "EPERM",
    );
    refused(
        "unlink of root's file in a sticky directory",
        &other("rm -f $1/tmp/rootfile"),
        "EPERM",
    );
    refused(
        "rename into a directory without write permission",
        &other("mv $1/open/victim $1/ro/victim"),
        "EACCES",
    );
    refused(
        "create in a directory without write permission",
        &other("touch $1/ro/new"),
        "EACCES",
    );
    refused(
        "mkdir in a 0700 directory",
        &other("mkdir $1/private/d"),
        "EACCES",
    );
    refused(
        "rm from the 0755 root",
        &other("rm -f $1/shared.txt"),
        "EACCES",
    );
    refused(
        "explicit times on another user's file",
        &other("touch -d 2001-01-01 $1/open/victim"),
        "EPERM",
    );

    // The owner may do everything to their own file, and a writer may set
    // the times of root's 0666 file to now.
    succeeded(
        "the owner",
        &other(
            "set -e; M=$1
             echo mine > $M/open/o; chmod 600 $M/open/o; cat $M/open/o
             chgrp 65534 $M/open/o; touch -d 2001-01-01 $M/open/o
             mv $M/open/o $M/tmp/o; rm $M/tmp/o
             echo keep > $M/open/keep; chmod 600 $M/open/keep
             echo left > $M/tmp/left
             touch $M/open/victim
             mkdir $M/open/d; mv $M/open/d $M/open/d2; rmdir $M/open/d2",
        ),
    );
    refused(
        "chgrp to a group the owner is not in",
        &other("chgrp 0 $1/open/keep"),
        "EPERM",
    );
    refused(
        "chown away by a non-root owner",
        &other("chown 0 $1/open/keep"),
        "EPERM",
    );

    // Root passes every check, except that executing needs an x bit.
    succeeded(
        "root",
        &s.shim(
            false,
            "set -e; M=$1
             ls $M/private >/dev/null; cat $M/open/keep $M/private/sub/g >/dev/null
             chmod 644 $M/open/keep; chown 0:0 $M/open/keep
             rm $M/tmp/left; echo more >> $M/shared.txt",
        ),
    );
    refused(
        "root executing a file without x bits",
        &s.shim(false, "$1/open/script"),
        "EACCES",
    );
    succeeded(
        "root executing it with an x bit",
        &s.shim(false, "chmod 744 $1/open/script && $1/open/script"),
    );
    // The stat of what the refusals would have changed.
    let check = s.shim(
        false,
        "stat -c '%a %u' $1/secret.txt $1/tmp/rootfile $1/open/victim; cat $1/shared.txt",
    );
    succeeded("stat", &check);
    assert_eq!(
        String::from_utf8_lossy(&check.stdout),
        "600 0\n666 0\n666 0\nshared\nmore\n"
    );
}

/// A removal reuses the attributes of a parent on another server for a
/// moment (one round trip for many removals in one directory), but never
/// past this client's own chmod of it, never for another caller's rights,
/// and never for longer than the TTL after another client's chmod.
#[test]
fn a_removal_reuses_a_remote_parent_only_while_it_cannot_have_changed() {
    use sfs_global::access::Caller;
    use sfs_global::distributor::Distributor;
    let cluster = Cluster::start(2);
    let client = cluster.client();
    let other = Caller {
        uid: 65534,
        gid: 65534,
        groups: Vec::new(),
    };
    client.mkdir("/d", 0o777).unwrap();
    client.chmod("/d", 0o777).unwrap();
    // Files whose entries live on the other server than /d's.
    let places = Distributor::new(2);
    let remote: Vec<String> = (0..200)
        .map(|i| format!("/d/f{i}"))
        .filter(|p| places.metadata_server(p) != places.metadata_server("/d"))
        .take(4)
        .collect();
    assert_eq!(remote.len(), 4);
    for path in &remote {
        let fd = client
            .open(path, libc::O_CREAT | libc::O_WRONLY, 0o666)
            .unwrap();
        client.close(fd).unwrap();
    }
    client.set_caller(Some(other.clone()));
    client.unlink(&remote[0]).unwrap();
    // This client's chmod: the next removal asks afresh.
    client.set_caller(None);
    client.chmod("/d", 0o755).unwrap();
    client.set_caller(Some(other.clone()));
    let e = client.unlink(&remote[1]).unwrap_err();
    assert_eq!(e.errno, sfs_global::Errno::EACCES, "{e}");
    // The parent now known as 0755: root may, the other user may not,
    // whoever asked first.
    client.set_caller(None);
    client.unlink(&remote[1]).unwrap();
    client.set_caller(Some(other.clone()));
    assert_eq!(
        client.unlink(&remote[2]).unwrap_err().errno,
        sfs_global::Errno::EACCES
    );
    // Another client opens the directory up: seen within the TTL.
    cluster.client().chmod("/d", 0o777).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    client.unlink(&remote[2]).unwrap();
}

/// A write or truncate by anyone but root clears `S_ISUID`, and `S_ISGID`
/// when the group may execute (Linux's rule); root's writes keep them, and
/// `S_ISGID` without group execute stays. Before, the bits survived every
/// write: a user could rewrite a setuid program of theirs, or another's
/// group-writable one, and keep its privileges.
#[test]
fn writes_by_a_user_clear_setuid_and_setgid() {
    // Over both protocols: the shim speaks the configured one.
    for rpc in [MetadataRpc::Lean, MetadataRpc::Grpc] {
        let Some(s) = Setup::new(rpc) else {
            return;
        };
        writes_clear_privileges(&s);
    }
}

fn writes_clear_privileges(s: &Setup) {
    let made = s.shim(
        true,
        "set -e; M=$1
         for f in w a t g l; do echo x > $M/open/$f; done
         chmod 6775 $M/open/w $M/open/a $M/open/t $M/open/l
         chmod 2745 $M/open/g
         echo y > $M/open/w; echo y >> $M/open/a; truncate -s 1 $M/open/t
         echo y >> $M/open/g
         stat -c '%a' $M/open/w $M/open/a $M/open/t $M/open/g",
    );
    succeeded("writes by the owner", &made);
    assert_eq!(
        String::from_utf8_lossy(&made.stdout),
        "775\n775\n775\n2745\n"
    );
    let root = s.shim(
        false,
        "set -e; M=$1; echo y >> $M/open/l; truncate -s 1 $M/open/l; stat -c '%a' $M/open/l",
    );
    succeeded("writes by root", &root);
    assert_eq!(String::from_utf8_lossy(&root.stdout), "6775\n");
}

/// A process that changes its ids under the shim is seen with the new ones
/// at its next call: the client keeps the ids it read (three system calls
/// saved per request), and the shim's set*id hooks say when they changed.
/// Without the hooks the old ones would be sent for up to a second.
#[test]
fn a_process_that_changes_its_ids_is_seen_with_the_new_ones() {
    let Some(s) = Setup::new(MetadataRpc::Lean) else {
        return;
    };
    let out = s.shim(
        false,
        r#"python3 - "$1" <<'PY'
import os, sys
m = sys.argv[1]
def listing():
    try:
        os.listdir(m + "/private")
        return "listed"
    except PermissionError:
        return "EACCES"
seen = [listing()]                        # root
os.setgroups([])
os.setegid(65534); os.seteuid(65534)
seen.append(listing())                    # effective ids dropped
os.seteuid(0); os.setegid(0)
seen.append(listing())                    # and taken back
os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
seen.append(listing())                    # dropped for good
print(" ".join(seen))
PY"#,
    );
    succeeded("python changing its ids", &out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "listed EACCES listed EACCES"
    );
}
