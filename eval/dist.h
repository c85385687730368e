/* dist.h — evaluations across ranks (prefix ae_dist_): `mpirun -np N apex4 eval ppl|zeroshot ...`.
 * The only place apex4 talks to MPI (eval/dist.c is the only file that includes <mpi.h>, and only
 * when built with APEX4_MPI: the Makefile detects Open MPI through mpicc).
 *
 * The policy (eval ppl and eval zeroshot follow it):
 *  - Work is split into contiguous blocks of a global index (ppl: windows; zeroshot: the packed
 *    calls of each task, in document order): rank r of N takes items [n*r/N, n*(r+1)/N)
 *    (ae_dist_block). Every rank holds its items' per-item partial results in a global array;
 *    ae_dist_allgather_blocks gives every rank the whole array, and the sums over items are then
 *    taken in global index order on every rank. Partial results are per item (a window's sums start
 *    from zero), so the numbers do not depend on N: N = 1 and N = 2 give bit-identical results.
 *  - Only rank 0 writes files (--out, --log-samples, checkpoints, the calibration cache) and prints
 *    the table and notices; every rank prints its own errors.
 *  - Errors never hang the job: the ranks meet at ae_dist_agree (once per work item, and inside
 *    every collective below), where a failure on any rank makes every rank return -1 (the failing
 *    rank keeps its own message, the others get "rank R failed ..."); an error that a rank meets
 *    outside these points ends the job with ae_dist_abort (MPI_Abort) after its message is printed.
 *  - One GPU per rank: the rank's local rank on its host (OMPI_COMM_WORLD_LOCAL_RANK) picks the
 *    device (ae_dist_gpu).
 * Without MPI, or when the process was not started by a launcher (no OMPI_COMM_WORLD_SIZE,
 * PMIX_RANK or PMI_SIZE in the environment), everything is a 1-rank no-op. A build without MPI
 * started under mpirun with N > 1 ranks refuses (ae_dist_init) rather than run N copies of the job.
 * Owners in pairs: ae_dist_init / ae_dist_finalize. */
#ifndef APEX4_AE_DIST_H
#define APEX4_AE_DIST_H

#include <stddef.h>

typedef struct {
    int rank, size;             /* MPI_COMM_WORLD rank and size (0 and 1 without MPI)              */
    int local_rank, local_size; /* among the ranks on this host (OMPI_COMM_WORLD_LOCAL_RANK/_SIZE)  */
    int mpi;                    /* 1 when ae_dist_init initialized MPI (finalize must end it)       */
    int agreed_failure;         /* set by ae_dist_agree when it saw a failure (every rank knows)    */
} ae_dist;

/* Join the job's ranks. Under a launcher in an MPI build: MPI_Init_thread (MPI_THREAD_FUNNELED: only
 * the calling thread talks to MPI), rank/size of MPI_COMM_WORLD, local rank/size from Open MPI's
 * environment (0/1 when absent). Otherwise d = {0, 1, 0, 1, 0, 0}. Errors (-1, err): a build without
 * MPI started with OMPI_COMM_WORLD_SIZE (or PMI_SIZE) > 1 ("apex4 was built without MPI ..."),
 * MPI_Init_thread failing. argc/argv may be NULL. */
int  ae_dist_init(int *argc, char ***argv, ae_dist *d, char *err);
/* MPI_Finalize when ae_dist_init started MPI; a no-op otherwise (d may be NULL). */
void ae_dist_finalize(ae_dist *d);
/* End every rank of the job with exit code `code` (MPI_Abort) when d has more than one rank and the
 * failure was not agreed by ae_dist_agree (other ranks might wait in a collective); else nothing
 * (the caller returns its code). Call after printing the error. */
void ae_dist_abort(ae_dist *d, int code);

static inline int ae_dist_rank(const ae_dist *d) { return d ? d->rank : 0; }
static inline int ae_dist_size(const ae_dist *d) { return d ? d->size : 1; }

/* The CUDA device of this rank among n_devices visible ones: local_rank % n_devices (0 when
 * n_devices < 1 or d is NULL). */
int  ae_dist_gpu(const ae_dist *d, int n_devices);

/* Contiguous block of items [0, n) owned by rank r of `size`: [n*r/size, n*(r+1)/size). Blocks of
 * consecutive ranks are adjacent, cover [0, n) and differ in length by at most one. */
void ae_dist_block(long n, int rank, int size, long *lo, long *hi);
/* The longest block of n items over size ranks (ceil(n / size)): the number of steps every rank
 * takes when ranks meet once per item. */
long ae_dist_max_block(long n, int size);

/* Every rank calls it at the same point: fails (-1) on every rank when local_rc != 0 on any rank.
 * On a rank whose local_rc != 0, err is left as the caller wrote it; on the others err becomes
 * "rank R of N failed (its message is on its stderr)" (R = the highest failing rank). *root_flag
 * (may be NULL) receives rank 0's value of *root_flag (>= 0; a decision taken on rank 0 such as
 * "write a checkpoint now"). One MPI_Allreduce; without MPI returns local_rc ? -1 : 0. */
int  ae_dist_agree(ae_dist *d, int local_rc, int *root_flag, char *err);

/* buf [n_items * per_item] doubles on every rank, each rank having filled the items of its block
 * (ae_dist_block): afterwards every rank holds every block, in index order (MPI_Allgatherv in
 * place). Checks ae_dist_agree(local_rc) first. Errors: a failed rank (as ae_dist_agree), counts
 * over INT_MAX doubles, MPI errors. */
int  ae_dist_allgather_blocks(ae_dist *d, int local_rc, double *buf, long n_items, int per_item, char *err);

/* The same for items of different sizes: item i is buf[off[i] .. off[i+1]) (off [n_items + 1],
 * ascending, the same on every rank); rank r filled the items of its block. */
int  ae_dist_allgather_ranges(ae_dist *d, int local_rc, double *buf, const long *off, long n_items, char *err);

/* Copy rank 0's buf [bytes] to every rank (MPI_Bcast, in pieces of at most 1 GiB), after
 * ae_dist_agree(local_rc) so that a failure on rank 0 before the broadcast does not leave the others
 * waiting. Errors as ae_dist_agree. */
int  ae_dist_bcast(ae_dist *d, int local_rc, void *buf, size_t bytes, char *err);

#endif
