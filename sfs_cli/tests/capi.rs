//! The C ABI (`include/sfs.h`): a C program compiled against the header and
//! linked with the client cdylib runs against real servers.

mod common;

use common::{Cluster, SFS};
use sfs_server::backend::dir::DirBackend;
use sfs_server::backend::ObjectBackend;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The client cdylib cargo built alongside the `sfs` binary.
fn client_library() -> PathBuf {
    let dir = Path::new(SFS).parent().expect("target dir");
    [
        dir.join("deps/libsfs_client.so"),
        dir.join("libsfs_client.so"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .expect("libsfs_client.so is built (sfs_client is a cdylib dependency of sfs)")
}

const PROGRAM: &str = r#"
#include "sfs.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "line %d: %s\n", __LINE__, #cond); return 1; } } while (0)

int main(int argc, char **argv) {
    sfs_client *c = sfs_connect(argv[1], argv[2]);
    CHECK(c != NULL);
    CHECK(sfs_mkdir(c, "/capi", 0755) == 0);
    CHECK(sfs_mkdir(c, "/capi", 0755) == -EEXIST);
    int fd = sfs_open(c, "/capi/f", O_CREAT | O_RDWR | O_EXCL, 0640);
    CHECK(fd >= 0);
    char data[3000];
    for (int i = 0; i < (int)sizeof data; i++) data[i] = (char)(i * 7);
    CHECK(sfs_pwrite(c, fd, data, sizeof data, 1000) == (ssize_t)sizeof data);
    CHECK(sfs_pwrite(c, fd, "hi", 2, -1) == 2); /* at the offset: 0 */
    CHECK(sfs_lseek(c, fd, 0, SEEK_END) == 4000);
    CHECK(sfs_fsync(c, fd) == 0);
    char back[4100];
    CHECK(sfs_pread(c, fd, back, sizeof back, 0) == 4000); /* short at EOF */
    CHECK(memcmp(back, "hi", 2) == 0 && back[2] == 0 && back[999] == 0); /* hole */
    CHECK(memcmp(back + 1000, data, sizeof data) == 0);
    struct stat st;
    CHECK(sfs_fstat(c, fd, &st) == 0 && st.st_size == 4000 && S_ISREG(st.st_mode));
    CHECK((st.st_mode & 07777) == 0640);
    CHECK(sfs_ftruncate(c, fd, 10) == 0);
    CHECK(sfs_close(c, fd) == 0);
    CHECK(sfs_close(c, fd) == -EBADF);
    CHECK(sfs_stat(c, "/capi/f", &st, 1) == 0 && st.st_size == 10);
    CHECK(sfs_symlink(c, "f", "/capi/l") == 0);
    char target[16] = {0};
    CHECK(sfs_readlink(c, "/capi/l", target, sizeof target) == 1 && target[0] == 'f');
    CHECK(sfs_stat(c, "/capi/l", &st, 0) == 0 && S_ISLNK(st.st_mode));
    CHECK(sfs_rename(c, "/capi/f", "/capi/g") == 0);
    CHECK(sfs_stat(c, "/capi/f", &st, 1) == -ENOENT);
    CHECK(sfs_chmod(c, "/capi/g", 0600) == 0);
    CHECK(sfs_truncate(c, "/capi/g", 0) == 0);
    CHECK(sfs_rmdir(c, "/capi") == -ENOTEMPTY);
    CHECK(sfs_unlink(c, "/capi/g") == 0 && sfs_unlink(c, "/capi/l") == 0);
    CHECK(sfs_rmdir(c, "/capi") == 0);

    /* Flush to the object back end: a range (the one chunk that holds
     * bytes 600000..600009, with 512 KiB chunks: chunk 1) and a whole file. */
    static char big[3 << 19];
    memset(big, 'b', sizeof big);
    CHECK(sfs_mkdir(c, "/flushed", 0755) == 0);
    fd = sfs_open(c, "/flushed/big", O_CREAT | O_WRONLY, 0644);
    CHECK(fd >= 0 && sfs_pwrite(c, fd, big, sizeof big, 0) == (ssize_t)sizeof big);
    CHECK(sfs_close(c, fd) == 0);
    fd = sfs_open(c, "/flushed/small", O_CREAT | O_WRONLY, 0644);
    CHECK(fd >= 0 && sfs_pwrite(c, fd, "small", 5, 0) == 5);
    CHECK(sfs_close(c, fd) == 0);
    CHECK(sfs_flush_range(c, "/flushed/big", 600000, 10) == 0);
    CHECK(sfs_flush(c, "/flushed/small") == 0);
    CHECK(sfs_flush(c, "/flushed") == -EISDIR);
    CHECK(sfs_flush(c, "/flushed/none") == -ENOENT);
    CHECK(sfs_flush_range(c, "/flushed/big", -1, 10) == -EINVAL);
    sfs_disconnect(c);
    puts("capi ok");
    return 0;
}
"#;

#[test]
fn a_c_program_uses_the_client_library() {
    let cluster = Cluster::start(2);
    let library = client_library();
    let dir = cluster.path();
    let source = dir.join("capi.c");
    std::fs::write(&source, PROGRAM).unwrap();
    let binary = dir.join("capi");
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include");
    let lib_dir = library.parent().unwrap();
    let cc = Command::new("cc")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .arg(&library)
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .output()
        .expect("cc runs");
    assert!(
        cc.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let run = Command::new(&binary)
        .arg(&cluster.config_path)
        .arg(&cluster.hostfile_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success() && stdout.contains("capi ok"),
        "{stdout}{stderr}"
    );
    // What the flushes left in the back end (`dir` under rootdir/backend).
    let client = cluster.client();
    let chunk = cluster.config.chunk_size;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let backend = DirBackend::open(&cluster.config.backend_dir()).unwrap();
    let extents = |path: &str| {
        let id = client.stat(path).unwrap().id;
        runtime.block_on(backend.extents(id)).unwrap()
    };
    assert_eq!(
        extents("/flushed/big"),
        vec![chunk..2 * chunk],
        "only chunk 1"
    );
    assert_eq!(extents("/flushed/small"), vec![0..5]);
}
