/* An IOR-like MPI program for the Slurm test (sfs_cli/tests/slurm.rs): every
 * rank writes its block of one shared file with collective MPI-IO (N-1,
 * as IOR -a MPIIO), syncs, then reads back the block of the next rank and
 * checks every byte; and writes a file of its own with POSIX calls (N-N).
 * Prints one line per rank: "rank R of N ok" or what differed; exits
 * non-zero on any error.
 *
 * Usage: mpi_io DIR BLOCK_BYTES */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

static unsigned char pattern(int rank, long i) {
    return (unsigned char)((rank * 131 + i * 7 + (i >> 12)) & 0xff);
}

static void fill(unsigned char *buf, int rank, long n) {
    for (long i = 0; i < n; i++)
        buf[i] = pattern(rank, i);
}

static int check(const unsigned char *buf, int rank, long n, const char *what, int me) {
    for (long i = 0; i < n; i++) {
        if (buf[i] != pattern(rank, i)) {
            printf("rank %d: %s: byte %ld of rank %d's block is %u, expected %u\n", me, what, i,
                   rank, buf[i], pattern(rank, i));
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc != 3) {
        if (rank == 0)
            fprintf(stderr, "usage: %s DIR BLOCK_BYTES\n", argv[0]);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    long block = atol(argv[2]);
    unsigned char *buf = malloc(block);
    unsigned char *back = malloc(block);
    char path[4096];
    int failed = 0;

    /* N-1 through MPI-IO. */
    snprintf(path, sizeof path, "%s/shared.dat", argv[1]);
    MPI_File fh;
    int rc = MPI_File_open(MPI_COMM_WORLD, path, MPI_MODE_CREATE | MPI_MODE_RDWR, MPI_INFO_NULL, &fh);
    if (rc != MPI_SUCCESS) {
        printf("rank %d: MPI_File_open %s failed (%d)\n", rank, path, rc);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    fill(buf, rank, block);
    MPI_Status st;
    rc = MPI_File_write_at_all(fh, (MPI_Offset)rank * block, buf, (int)block, MPI_BYTE, &st);
    failed |= rc != MPI_SUCCESS;
    MPI_File_sync(fh);
    MPI_Barrier(MPI_COMM_WORLD);
    int next = (rank + 1) % size;
    rc = MPI_File_read_at_all(fh, (MPI_Offset)next * block, back, (int)block, MPI_BYTE, &st);
    failed |= rc != MPI_SUCCESS;
    failed |= check(back, next, block, "MPI-IO read", rank);
    MPI_File_close(&fh);

    /* N-N through POSIX. */
    snprintf(path, sizeof path, "%s/rank-%d.dat", argv[1], rank);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0 || write(fd, buf, block) != block || fsync(fd) != 0 || close(fd) != 0) {
        printf("rank %d: writing %s failed\n", rank, path);
        failed = 1;
    }
    MPI_Barrier(MPI_COMM_WORLD);
    snprintf(path, sizeof path, "%s/rank-%d.dat", argv[1], next);
    fd = open(path, O_RDONLY);
    if (fd < 0 || read(fd, back, block) != block) {
        printf("rank %d: reading %s failed\n", rank, path);
        failed = 1;
    } else {
        failed |= check(back, next, block, "POSIX read", rank);
    }
    if (fd >= 0)
        close(fd);

    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (!failed)
        printf("rank %d of %d ok\n", rank, size);
    fflush(stdout);
    MPI_Finalize();
    return any ? 1 : 0;
}
