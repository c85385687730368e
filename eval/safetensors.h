/* safetensors.h — read (memory-mapped, validated) and write safetensors files (prefix ae_st_).
 * Source: safetensors format spec (https://github.com/huggingface/safetensors, "Format"):
 * 8-byte little-endian u64 N, an N-byte JSON header {"__metadata__": {str: str}?, name: {"dtype",
 * "shape", "data_offsets": [begin, end)}}, then the data section; offsets are relative to the data
 * section. Validation follows safetensors' own Metadata::validate: after sorting by offset the
 * tensors tile the data section exactly (no overlap, no gap, nothing after the last one), and
 * end - begin == numel * dtype size. Owners in pairs: ae_st_open / ae_st_close. */
#ifndef APEX4_AE_SAFETENSORS_H
#define APEX4_AE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define AE_ST_MAX_DIMS 8

typedef enum { AE_DT_F32 = 0, AE_DT_F16 = 1, AE_DT_BF16 = 2 } ae_dtype;

typedef struct {
    char    *name;                    /* tensor name (NUL-terminated, owned by the file)          */
    ae_dtype dtype;
    int      ndim;                    /* 0..AE_ST_MAX_DIMS                                        */
    int64_t  shape[AE_ST_MAX_DIMS];   /* (ndim)                                                   */
    uint64_t numel;
    uint64_t begin, end;              /* byte offsets in the data section, end - begin = numel*sz */
} ae_st_tensor;

typedef struct {
    char          path[4096];
    const uint8_t *map;      /* the whole file, mmap'ed read-only (size bytes)                    */
    size_t         size;
    size_t         data_off; /* 8 + N: start of the data section in the file                       */
    ae_st_tensor  *t;        /* (n) in header order                                               */
    int            n;
} ae_st_file;

/* "F32", "F16", "BF16" <-> ae_dtype; bytes per element. ae_dtype_parse returns -1 for any other
 * string (err says whether it is a known-but-unsupported safetensors dtype or an unknown one). */
int         ae_dtype_parse(const char *s, ae_dtype *out, const char *what, char *err);
const char *ae_dtype_name(ae_dtype d);
size_t      ae_dtype_size(ae_dtype d);

/* Open and validate a safetensors file (the entry point for a safetensors file / header: fuzz
 * harnesses call it on a file path). Errors name the file and, when one is at fault, the tensor:
 * empty or overlong path, short file, header length past the end or over 100 MiB, header not JSON
 * / not an object, a header that ax_json_parse_strict rejects (NUL byte, \u0000 escape, duplicate
 * name, anything but whitespace after the object), an entry that is not an object with a string
 * "dtype", an array "shape" of integers in [0, 2^53] (at most AE_ST_MAX_DIMS) and "data_offsets"
 * of exactly 2 such integers, "__metadata__" that is not an object of strings, an element count
 * or byte size that overflows size_t, numel * dtype size != end - begin, offsets past the data
 * section, overlapping tensors, gaps, trailing bytes. */
int  ae_st_open(const char *path, ae_st_file **out, char *err);
void ae_st_close(ae_st_file *f);
/* The tensor called name, or NULL. */
const ae_st_tensor *ae_st_find(const ae_st_file *f, const char *name);
/* Widen tensor t to fp32 (exact) into dst [t->numel]. Non-finite values (NaN, ±inf) are an error
 * naming the file, the tensor and the flat index. */
int  ae_st_read_f32(const ae_st_file *f, const ae_st_tensor *t, float *dst, char *err);

/* model.safetensors.index.json, transformers' sharded layout (modeling_utils.py,
 * load_sharded_checkpoint): {"metadata": {...}?, "weight_map": {tensor name: shard file name}}.
 * Parsed strictly (ax_json_parse_strict: duplicate keys, trailing data, NUL bytes and \u0000 are
 * errors). Every shard name must be a plain file name in the checkpoint folder: not empty, not "."
 * or "..", no '/' (errors name the index file and the weight_map key). Other top-level keys are
 * ignored; "metadata" must be an object when present. This is the entry point for index.json
 * (fuzz harnesses call it on a file path). Owners in pairs: ae_st_index_load / ae_st_index_free. */
typedef struct {
    char   path[4096];
    int    n_files;
    char **files;   /* (n_files) distinct shard file names, in weight_map order of first use     */
    int    n;
    char **names;   /* (n) tensor names, sorted by strcmp                                        */
    int   *file;    /* (n) index into files of the shard holding names[i]                        */
} ae_st_index;
int  ae_st_index_load(const char *path, ae_st_index **out, char *err);
void ae_st_index_free(ae_st_index *x);
/* The shard file name the index gives for tensor, or NULL when it is not listed. */
const char *ae_st_index_file(const ae_st_index *x, const char *tensor);

/* Streaming writer: ae_st_write_begin writes the header for n tensors (names[n], dtypes[n],
 * shapes ndims[n] x dims) to a temporary file next to path, padded with spaces to a multiple of 8
 * bytes as safetensors does; then ae_st_write_tensor is called once per tensor IN ORDER with fp32
 * data [numel] (rounded to the dtype: F16 and BF16 round to nearest even; non-finite or F16
 * overflow is an error naming the tensor); ae_st_write_end renames the file onto path
 * (ae_st_write_abort removes it). The header's __metadata__ is {"format": "pt"}, as torch writes. */
typedef struct ae_st_writer ae_st_writer;
int  ae_st_write_begin(const char *path, int n, const char *const *names, const ae_dtype *dtypes,
                       const int *ndims, const int64_t *const *shapes, ae_st_writer **out, char *err);
int  ae_st_write_tensor(ae_st_writer *w, const float *data, char *err);
int  ae_st_write_end(ae_st_writer *w, char *err);
void ae_st_write_abort(ae_st_writer *w);

#endif
