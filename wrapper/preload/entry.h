/*
 * What the generated forwarders (forwarders.c) need from entry.c. This
 * header must not include system headers: forwarders.c defines functions
 * (open, stat, ...) whose glibc declarations it would then contradict.
 */
#ifndef SFS_ENTRY_H
#define SFS_ENTRY_H

#define SFS_AT_FDCWD (-100)

/* Where one hooked function goes: the shim's function of that name or the
 * next library's, each looked up once. All zeros (.bss) until first used. */
struct sfs_slot {
    void *_Atomic shim;
    void *_Atomic real;
};

/* The shim's function `name` if the shim is loaded (and has it), else NULL. */
void *sfs_shim_fn(struct sfs_slot *slot, const char *name);
/* The next library's `real_name`. */
void *sfs_real_fn(struct sfs_slot *slot, const char *real_name);
/* Loads the shim (once) and returns its `name`, or the next library's. */
void *sfs_load_for(struct sfs_slot *slot, const char *name, const char *real_name);
/* True while the shim is not loaded (or failed) and this thread is not
 * inside the library's own code: only then are path arguments looked at. */
int sfs_may_route(void);
/* Would the shim take `path` (relative to `dirfd`) as an SFS path? */
int sfs_touches_mount(int dirfd, const char *path);

/* Is `addr` (of `len` bytes) an AF_UNIX address naming a path the shim
 * would take (bind, connect)? */
int sfs_sockaddr_touches_mount(const void *addr, unsigned int len);
/* Does an entry of PATH lie under the mount? */
int sfs_path_var_touches_mount(void);

#endif
