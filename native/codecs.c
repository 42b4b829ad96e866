/*
 * The squashfs block codecs Node.js lacks, from the libraries mksquashfs and the kernel's
 * formats are defined by: xz (liblzma) and LZO (liblzo2); and a better gzip encoder, libdeflate,
 * whose zlib streams at level 9 are smaller than zlib's and made 2-4x faster. Every call is
 * synchronous and self-contained, so worker threads can compress blocks in parallel.
 *
 * deflateCompress(data, level) -> Buffer | undefined
 *   A zlib stream (RFC 1950, as squashfs's gzip compressor stores) of data at libdeflate level
 *   1..12; undefined when it is not smaller than the input.
 * xzCompress(data, preset, dictSize, bcjFilters) -> Buffer | undefined
 *   An .xz stream (CRC32 check, LZMA2 with the given preset and dictionary) of data, trying
 *   LZMA2 alone and each listed BCJ filter in front of it and keeping the smallest; undefined
 *   when none is smaller than the input (the block is then stored uncompressed).
 * xzDecompress(data, limit) -> Buffer   (the whole input must be one .xz stream)
 * lzoDecompress(data, limit) -> Buffer  (LZO1X, every read bounds-checked by liblzo2)
 */
#include <libdeflate.h>
#include <lzma.h>
#include <lzo/lzo1x.h>
#include "napi-helpers.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Decoding a squashfs block needs at most a 1 MiB dictionary; refuse streams that ask for more. */
#define XZ_MEMLIMIT (64u << 20)

static napi_value undefined(napi_env env) {
  napi_value result;
  napi_get_undefined(env, &result);
  return result;
}

static napi_value copy_out(napi_env env, const uint8_t *data, size_t length) {
  napi_value result;
  void *ignored;
  if (napi_create_buffer_copy(env, length, data, &ignored, &result) != napi_ok)
    return fail(env, "ERR_CODEC", "out of memory");
  return result;
}

/* Compressors are costly to set up, so each thread (each Node-API environment) keeps one per level. */
struct deflaters {
  struct libdeflate_compressor *level[13];
};

static void free_deflaters(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct deflaters *d = data;
  for (int i = 0; i < 13; i++) libdeflate_free_compressor(d->level[i]);
  free(d);
}

static napi_value deflate_compress(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  uint8_t *data;
  size_t length;
  uint32_t level;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 ||
      !bytes(env, argv[0], &data, &length) || napi_get_value_uint32(env, argv[1], &level) != napi_ok ||
      level < 1 || level > 12)
    return fail(env, "ERR_CODEC", "deflateCompress(data, level 1..12): bad arguments");
  struct deflaters *d;
  if (napi_get_instance_data(env, (void **)&d) != napi_ok || d == NULL)
    return fail(env, "ERR_CODEC", "deflateCompress: no per-thread state");
  if (d->level[level] == NULL && (d->level[level] = libdeflate_alloc_compressor((int)level)) == NULL)
    return fail(env, "ERR_CODEC", "out of memory");
  if (length < 2) return undefined(env);
  uint8_t *out = malloc(length - 1);
  if (out == NULL) return fail(env, "ERR_CODEC", "out of memory");
  size_t written = libdeflate_zlib_compress(d->level[level], data, length, out, length - 1);
  napi_value result = written > 0 ? copy_out(env, out, written) : undefined(env);
  free(out);
  return result;
}

/* LZMA2 literal/position settings suited to each BCJ filter's instruction alignment. */
static void tune_for_filter(lzma_options_lzma *options, lzma_vli filter) {
  switch (filter) {
  case LZMA_FILTER_ARMTHUMB:
    options->lp = 1;
    break;
  case LZMA_FILTER_POWERPC:
  case LZMA_FILTER_ARM:
  case LZMA_FILTER_SPARC:
#ifdef LZMA_FILTER_ARM64
  case LZMA_FILTER_ARM64:
#endif
    options->lp = 2;
    options->lc = 2;
    break;
  case LZMA_FILTER_IA64:
    options->pb = 4;
    options->lp = 4;
    options->lc = 0;
    break;
  }
}

static napi_value xz_compress(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  uint8_t *data;
  size_t length;
  uint32_t preset, dict_size, filter_count;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4 ||
      !bytes(env, argv[0], &data, &length) || napi_get_value_uint32(env, argv[1], &preset) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &dict_size) != napi_ok ||
      napi_get_array_length(env, argv[3], &filter_count) != napi_ok || filter_count > 8)
    return fail(env, "ERR_CODEC", "xzCompress(data, preset, dictSize, bcjFilters): bad arguments");
  if (length < 2) return undefined(env);
  /* Only output smaller than the input is worth storing. */
  size_t capacity = length - 1;
  uint8_t *best = malloc(capacity), *trial = malloc(capacity);
  if (best == NULL || trial == NULL) {
    free(best);
    free(trial);
    return fail(env, "ERR_CODEC", "out of memory");
  }
  size_t best_length = 0;
  const char *error = NULL;
  for (uint32_t i = 0; i <= filter_count && error == NULL; i++) {
    lzma_vli bcj = LZMA_VLI_UNKNOWN;
    if (i > 0) {
      napi_value element;
      int64_t id;
      if (napi_get_element(env, argv[3], i - 1, &element) != napi_ok ||
          napi_get_value_int64(env, element, &id) != napi_ok || id <= 0) {
        error = "xzCompress: a BCJ filter id is not a number";
        break;
      }
      bcj = (lzma_vli)id;
    }
    lzma_options_lzma options;
    if (lzma_lzma_preset(&options, preset)) {
      error = "xzCompress: the preset is not 0..9 (optionally | LZMA_PRESET_EXTREME)";
      break;
    }
    options.dict_size = dict_size;
    if (bcj != LZMA_VLI_UNKNOWN) tune_for_filter(&options, bcj);
    lzma_filter chain[3];
    int n = 0;
    if (bcj != LZMA_VLI_UNKNOWN) chain[n++] = (lzma_filter){.id = bcj, .options = NULL};
    chain[n++] = (lzma_filter){.id = LZMA_FILTER_LZMA2, .options = &options};
    chain[n] = (lzma_filter){.id = LZMA_VLI_UNKNOWN, .options = NULL};
    size_t written = 0;
    lzma_ret ret = lzma_stream_buffer_encode(chain, LZMA_CHECK_CRC32, NULL, data, length, trial, &written, capacity);
    if (ret == LZMA_OK) {
      if (best_length == 0 || written < best_length) {
        uint8_t *swap = best;
        best = trial;
        trial = swap;
        best_length = written;
      }
    } else if (ret != LZMA_BUF_ERROR) {
      error = ret == LZMA_OPTIONS_ERROR ? "xzCompress: liblzma does not support these options or filter"
                                        : "xzCompress: liblzma failed";
    }
  }
  napi_value result = error != NULL   ? fail(env, "ERR_CODEC", error)
                      : best_length ? copy_out(env, best, best_length)
                                    : undefined(env);
  free(best);
  free(trial);
  return result;
}

/* Reads (data, limit) and allocates the output buffer; returns 0 after throwing. */
static int decode_arguments(napi_env env, napi_callback_info info, const char *usage, uint8_t **data,
                            size_t *length, uint8_t **out, uint32_t *limit) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 ||
      !bytes(env, argv[0], data, length) || napi_get_value_uint32(env, argv[1], limit) != napi_ok) {
    fail(env, "ERR_CODEC", usage);
    return 0;
  }
  *out = malloc(*limit > 0 ? *limit : 1);
  if (*out == NULL) {
    fail(env, "ERR_CODEC", "out of memory");
    return 0;
  }
  return 1;
}

static napi_value xz_decompress(napi_env env, napi_callback_info info) {
  uint8_t *data, *out;
  size_t length;
  uint32_t limit;
  if (!decode_arguments(env, info, "xzDecompress(data, limit): bad arguments", &data, &length, &out, &limit))
    return NULL;
  uint64_t memlimit = XZ_MEMLIMIT;
  size_t in_pos = 0, out_pos = 0;
  lzma_ret ret = lzma_stream_buffer_decode(&memlimit, 0, NULL, data, &in_pos, length, out, &out_pos, limit);
  napi_value result;
  if (ret == LZMA_OK && in_pos == length)
    result = copy_out(env, out, out_pos);
  else
    result = fail(env, "ERR_CODEC_CORRUPT",
                  ret == LZMA_OK         ? "xz: data follows the stream"
                  : ret == LZMA_BUF_ERROR ? "xz: the stream is truncated or decodes past its limit"
                  : ret == LZMA_MEMLIMIT_ERROR ? "xz: the stream needs an excessive dictionary"
                  : ret == LZMA_DATA_ERROR    ? "xz: the stream is corrupt"
                  : ret == LZMA_FORMAT_ERROR  ? "xz: not an .xz stream"
                  : ret == LZMA_OPTIONS_ERROR ? "xz: unsupported stream options"
                                              : "xz: the stream cannot be decoded");
  free(out);
  return result;
}

static napi_value lzo_decompress(napi_env env, napi_callback_info info) {
  uint8_t *data, *out;
  size_t length;
  uint32_t limit;
  if (!decode_arguments(env, info, "lzoDecompress(data, limit): bad arguments", &data, &length, &out, &limit))
    return NULL;
  lzo_uint produced = limit;
  int ret = lzo1x_decompress_safe(data, length, out, &produced, NULL);
  napi_value result = ret == LZO_E_OK ? copy_out(env, out, produced)
                      : fail(env, "ERR_CODEC_CORRUPT",
                             ret == LZO_E_OUTPUT_OVERRUN ? "lzo: the block decodes past its limit"
                             : ret == LZO_E_INPUT_NOT_CONSUMED ? "lzo: data follows the block"
                             : ret == LZO_E_INPUT_OVERRUN      ? "lzo: the block is truncated"
                                                               : "lzo: the block is corrupt");
  free(out);
  return result;
}

NAPI_MODULE_INIT() {
  if (lzo_init() != LZO_E_OK) return NULL;
  struct deflaters *d = calloc(1, sizeof *d);
  if (d == NULL || napi_set_instance_data(env, d, free_deflaters, NULL) != napi_ok) {
    free(d);
    return NULL;
  }
  const napi_property_descriptor functions[] = {
      {"deflateCompress", NULL, deflate_compress, NULL, NULL, NULL, napi_enumerable, NULL},
      {"xzCompress", NULL, xz_compress, NULL, NULL, NULL, napi_enumerable, NULL},
      {"xzDecompress", NULL, xz_decompress, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lzoDecompress", NULL, lzo_decompress, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof functions / sizeof functions[0], functions) != napi_ok)
    return NULL;
  return exports;
}
