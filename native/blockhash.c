/*
 * Hashes many equal-sized blocks in one call: the hot loop of dm-verity and fs-verity.
 * JavaScript can only hash one block per crypto call, and at 4 KiB that call's overhead costs as
 * much as the hashing itself. This calls the OpenSSL that Node.js carries (its symbols are
 * exported to addons), so the digests are OpenSSL's, as with node:crypto.
 *
 * hashBlocks(algorithm, data, blockSize, prefix, suffix, out, outOffset, stride)
 *   for each block i of data: out[outOffset + i*stride ...] = H(prefix || block || suffix)
 */
#include "napi-helpers.h"
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The few OpenSSL 3 functions used, declared here so no OpenSSL headers are needed. */
typedef struct evp_md_st EVP_MD;
typedef struct evp_md_ctx_st EVP_MD_CTX;
EVP_MD *EVP_MD_fetch(void *libctx, const char *algorithm, const char *properties);
void EVP_MD_free(EVP_MD *md);
int EVP_MD_get_size(const EVP_MD *md);
EVP_MD_CTX *EVP_MD_CTX_new(void);
void EVP_MD_CTX_free(EVP_MD_CTX *ctx);
int EVP_DigestInit_ex2(EVP_MD_CTX *ctx, const EVP_MD *type, const void *params);
int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *data, size_t count);
int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *md, unsigned int *size);
int EVP_MD_CTX_copy_ex(EVP_MD_CTX *out, const EVP_MD_CTX *in);
void ERR_clear_error(void);

static napi_value hash_blocks(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 8)
    return fail(env, "ERR_BLOCKHASH", "hashBlocks takes 8 arguments");
  char name[16];
  size_t name_length;
  uint8_t *data, *prefix, *suffix, *out;
  size_t data_length, prefix_length, suffix_length, out_length;
  uint32_t block_size, out_offset, stride;
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &name_length) != napi_ok ||
      !bytes(env, argv[1], &data, &data_length) ||
      napi_get_value_uint32(env, argv[2], &block_size) != napi_ok ||
      !bytes(env, argv[3], &prefix, &prefix_length) || !bytes(env, argv[4], &suffix, &suffix_length) ||
      !bytes(env, argv[5], &out, &out_length) || napi_get_value_uint32(env, argv[6], &out_offset) != napi_ok ||
      napi_get_value_uint32(env, argv[7], &stride) != napi_ok)
    return fail(env, "ERR_BLOCKHASH", "hashBlocks: bad argument types");
  if (block_size == 0 || data_length % block_size != 0)
    return fail(env, "ERR_BLOCKHASH", "hashBlocks: data is not whole blocks");
  EVP_MD *md = EVP_MD_fetch(NULL, name, NULL);
  if (md == NULL) {
    ERR_clear_error(); /* leave nothing on OpenSSL's error queue for node:crypto to trip over */
    return fail(env, "ERR_BLOCKHASH", "hashBlocks: unknown hash algorithm");
  }
  size_t digest_size = (size_t)EVP_MD_get_size(md);
  size_t count = data_length / block_size;
  if (stride < digest_size || (count > 0 && (size_t)out_offset + (count - 1) * stride + digest_size > out_length)) {
    EVP_MD_free(md);
    return fail(env, "ERR_BLOCKHASH", "hashBlocks: the output is too small");
  }
  /* The prefix (the salt) is absorbed once; each block starts from a copy of that state. */
  EVP_MD_CTX *base = EVP_MD_CTX_new();
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int ok = base != NULL && ctx != NULL && EVP_DigestInit_ex2(base, md, NULL) &&
           EVP_DigestUpdate(base, prefix, prefix_length);
  unsigned char digest[64];
  for (size_t i = 0; ok && i < count; i++) {
    ok = EVP_MD_CTX_copy_ex(ctx, base) && EVP_DigestUpdate(ctx, data + i * block_size, block_size) &&
         EVP_DigestUpdate(ctx, suffix, suffix_length) && EVP_DigestFinal_ex(ctx, digest, NULL);
    if (ok) memcpy(out + out_offset + i * stride, digest, digest_size);
  }
  EVP_MD_CTX_free(base);
  EVP_MD_CTX_free(ctx);
  EVP_MD_free(md);
  if (!ok) {
    ERR_clear_error();
    return fail(env, "ERR_BLOCKHASH", "hashBlocks: OpenSSL failed");
  }
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "hashBlocks", NAPI_AUTO_LENGTH, hash_blocks, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "hashBlocks", fn) != napi_ok) return NULL;
  return exports;
}
