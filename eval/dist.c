/* dist.c — evaluations across ranks (see dist.h). The only file that includes <mpi.h>. */
#include "dist.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "ax_util.h"

#if defined(APEX4_MPI) && APEX4_MPI
#include <mpi.h>
#define HAVE_MPI 1
#else
#define HAVE_MPI 0
#endif

#define SETERR(...) ax_seterr(err, __VA_ARGS__)

/* An environment variable as a positive int, or 0 when absent or not a plain positive number. */
static long env_long(const char *name) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    return *end || v < 0 ? 0 : v;
}

/* The launcher's world size from its environment: Open MPI (mpirun), PMI (MPICH, Slurm). 0 = none. */
static long launcher_size(void) {
    long n = env_long("OMPI_COMM_WORLD_SIZE");
    if (!n) n = env_long("PMI_SIZE");
    return n;
}

int ae_dist_init(int *argc, char ***argv, ae_dist *d, char *err) {
    memset(d, 0, sizeof *d);
    d->size = d->local_size = 1;
    long n = launcher_size();
    int launched = n > 0 || getenv("PMIX_RANK") != NULL;
#if HAVE_MPI
    if (!launched) return 0;
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        SETERR("MPI_Init_thread failed (started by mpirun with %ld ranks)", n);
        return -1;
    }
    d->mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    long lr = env_long("OMPI_COMM_WORLD_LOCAL_RANK"), ls = env_long("OMPI_COMM_WORLD_LOCAL_SIZE");
    d->local_rank = (int)lr;
    d->local_size = ls > 0 ? (int)ls : 1;
    return 0;
#else
    (void)argc;
    (void)argv;
    (void)launched;
    if (n > 1) {
        SETERR("apex4 was built without MPI (no mpicc when it was built, or MPI=0), but it was started "
               "by a launcher with %ld ranks: every rank would run the whole job. Rebuild with Open MPI "
               "(Debian: openmpi-bin libopenmpi-dev) or run it without mpirun", n);
        return -1;
    }
    return 0;
#endif
}

void ae_dist_finalize(ae_dist *d) {
    if (!d || !d->mpi) return;
#if HAVE_MPI
    MPI_Finalize();
#endif
    d->mpi = 0;
}

void ae_dist_abort(ae_dist *d, int code) {
    if (!d || d->size < 2 || d->agreed_failure) return;
#if HAVE_MPI
    MPI_Abort(MPI_COMM_WORLD, code);
#else
    (void)code;
#endif
}

int ae_dist_gpu(const ae_dist *d, int n_devices) {
    if (!d || n_devices < 1) return 0;
    return d->local_rank % n_devices;
}

void ae_dist_block(long n, int rank, int size, long *lo, long *hi) {
    if (size < 1) size = 1;
    /* n * r / size without overflow for any n < 2^62 and size < 2^31 */
    *lo = (long)((__int128)n * rank / size);
    *hi = (long)((__int128)n * (rank + 1) / size);
}

long ae_dist_max_block(long n, int size) {
    if (size < 1) size = 1;
    return (n + size - 1) / size;
}

int ae_dist_agree(ae_dist *d, int local_rc, int *root_flag, char *err) {
    if (!d || d->size < 2) return local_rc ? -1 : 0;
#if HAVE_MPI
    /* v[0]: highest failing rank + 1 (0: none); v[1]: rank 0's flag (others contribute 0) */
    int v[2] = {local_rc ? d->rank + 1 : 0, d->rank == 0 && root_flag ? *root_flag : 0};
    int r[2] = {0, 0};
    if (MPI_Allreduce(v, r, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS) {
        SETERR("rank %d: MPI_Allreduce failed", d->rank);
        return -1;
    }
    if (root_flag) *root_flag = r[1];
    if (r[0]) {
        d->agreed_failure = 1;
        if (!local_rc) SETERR("rank %d of %d failed (its message is on its stderr)", r[0] - 1, d->size);
        return -1;
    }
    return 0;
#else
    (void)root_flag;
    (void)err;
    return local_rc ? -1 : 0;
#endif
}

int ae_dist_allgather_ranges(ae_dist *d, int local_rc, double *buf, const long *off, long n_items, char *err) {
    if (ae_dist_agree(d, local_rc, NULL, err)) return -1;
    if (!d || d->size < 2) return 0;
#if HAVE_MPI
    int *counts = malloc((size_t)d->size * sizeof *counts), *displs = malloc((size_t)d->size * sizeof *displs);
    int rc = -1;
    if (!counts || !displs) { SETERR("rank %d: out of memory", d->rank); goto done; }
    if (n_items < 0 || off[n_items] > (long)INT_MAX) {
        SETERR("gather of %ld items (%ld doubles): outside the MPI count range", n_items, n_items >= 0 ? off[n_items] : 0);
        goto done;
    }
    for (int r = 0; r < d->size; r++) {
        long lo, hi;
        ae_dist_block(n_items, r, d->size, &lo, &hi);
        counts[r] = (int)(off[hi] - off[lo]);
        displs[r] = (int)off[lo];
    }
    if (MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs, MPI_DOUBLE, MPI_COMM_WORLD) !=
        MPI_SUCCESS) {
        SETERR("rank %d: MPI_Allgatherv failed", d->rank);
        goto done;
    }
    rc = 0;
done:
    free(counts);
    free(displs);
    return rc;
#else
    (void)buf;
    (void)off;
    (void)n_items;
    return 0;
#endif
}

int ae_dist_allgather_blocks(ae_dist *d, int local_rc, double *buf, long n_items, int per_item, char *err) {
    if (!d || d->size < 2) return ae_dist_agree(d, local_rc, NULL, err);
    if (per_item < 1 || n_items < 0 || (double)n_items * per_item > (double)INT_MAX) {
        SETERR("gather of %ld items x %d doubles: outside the MPI count range", n_items, per_item);
        local_rc = -1;
    }
    long *off = local_rc ? NULL : malloc(((size_t)n_items + 1) * sizeof *off);
    if (!local_rc && !off) { SETERR("rank %d: out of memory", d->rank); local_rc = -1; }
    for (long i = 0; off && i <= n_items; i++) off[i] = i * per_item;
    int rc = ae_dist_allgather_ranges(d, local_rc, buf, off, n_items, err);
    free(off);
    return rc;
}

int ae_dist_bcast(ae_dist *d, int local_rc, void *buf, size_t bytes, char *err) {
    if (ae_dist_agree(d, local_rc, NULL, err)) return -1;
    if (!d || d->size < 2) return 0;
#if HAVE_MPI
    const size_t piece = (size_t)1 << 30;
    for (size_t off = 0; off < bytes; off += piece) {
        size_t n = bytes - off < piece ? bytes - off : piece;
        if (MPI_Bcast((char *)buf + off, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS) {
            SETERR("rank %d: MPI_Bcast failed", d->rank);
            return -1;
        }
    }
    return 0;
#else
    (void)buf;
    (void)bytes;
    return 0;
#endif
}
