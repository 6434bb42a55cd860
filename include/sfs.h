/* SFS client library, C ABI.
 *
 * Link with -lsfs_client (the cdylib built from sfs_client/). Paths are SFS
 * paths: "/" is the root of the SFS namespace. Every call returns what the
 * POSIX call returns on success and the NEGATIVE errno on failure (errno is
 * not touched). */
#ifndef SFS_H
#define SFS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sfs_client sfs_client;

/* Connects to the servers of `hostfile_path` with `config_path`; NULL on error. */
sfs_client *sfs_connect(const char *config_path, const char *hostfile_path);
void sfs_disconnect(sfs_client *c);

int sfs_open(const sfs_client *c, const char *path, int flags, unsigned int mode);
int sfs_close(const sfs_client *c, int fd);
/* offset < 0: read/write at (and advance) the descriptor's offset. */
ssize_t sfs_pread(const sfs_client *c, int fd, void *buf, size_t len, int64_t offset);
ssize_t sfs_pwrite(const sfs_client *c, int fd, const void *buf, size_t len, int64_t offset);
int64_t sfs_lseek(const sfs_client *c, int fd, int64_t offset, int whence);
int sfs_fsync(const sfs_client *c, int fd);
int sfs_ftruncate(const sfs_client *c, int fd, int64_t size);

/* follow != 0: stat(2); follow == 0: lstat(2). */
int sfs_stat(const sfs_client *c, const char *path, struct stat *st, int follow);
int sfs_fstat(const sfs_client *c, int fd, struct stat *st);
int sfs_mkdir(const sfs_client *c, const char *path, unsigned int mode);
int sfs_rmdir(const sfs_client *c, const char *path);
int sfs_unlink(const sfs_client *c, const char *path);
int sfs_rename(const sfs_client *c, const char *oldpath, const char *newpath);
int sfs_truncate(const sfs_client *c, const char *path, int64_t size);
int sfs_chmod(const sfs_client *c, const char *path, unsigned int mode);
int sfs_symlink(const sfs_client *c, const char *target, const char *linkpath);
/* Object back end (docs/tiering.md): write the file's data to the back end
 * and wait until it is persistent there; _range only the chunks holding
 * [offset, offset + len) (len 0: to the end of the file). 0 or -errno. */
int sfs_flush(const sfs_client *c, const char *path);
int sfs_flush_range(const sfs_client *c, const char *path, int64_t offset, int64_t len);
/* Bytes placed in buf (not NUL-terminated). */
ssize_t sfs_readlink(const sfs_client *c, const char *path, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
