/*
 * Hashes many equal-sized blocks in one call: the hot loop of dm-verity and fs-verity.
 * JavaScript can only hash one block per crypto call, and at 4 KiB that call's overhead costs as
 * much as the hashing itself. This calls the OpenSSL that Node.js carries (its symbols are
 * exported to addons), so the digests are OpenSSL's, as with node:crypto.
 *
 * hashBlocks(algorithm, data, blockSize, prefix, suffix, out, outOffset, stride)
 *   for each block i of data: out[outOffset + i*stride ...] = H(prefix || block || suffix)
 *
 * hashFileBlocks(fd, position, blockSize, algorithm, prefix, suffix, count, out, stride,
 *                multiBuffer) -> Promise<number>
 *   The same for count blocks of a file from byte position (zeros past its end): on a thread of
 *   libuv's pool, which reads them a stretch at a time into a buffer of its own (256 KiB, kept
 *   for the thread's next call) and hashes them there, while it is still in the CPU's cache.
 *   Resolves to the number of bytes the file had. The caller owns out and reuses it once the
 *   promise settles; a file of any size is hashed in a fixed amount of memory, on every core,
 *   with one call for megabytes of data. With multiBuffer and the engine below, the blocks are
 *   hashed side by side instead of one after another.
 *
 * multiBufferEngine() -> string | undefined
 *   The multi-buffer engine hashFileBlocks can use, e.g. "intel-ipsec-mb 1.3.0 AVX512", or
 *   undefined. One core hashes a single message no faster than its SHA instructions' latency
 *   allows (OpenSSL's SHA-NI code: 1.8 GB/s of 4 KiB SHA-256 blocks on this project's build
 *   host); Intel's multi-buffer library hashes 16 independent blocks at once in AVX-512 lanes
 *   (3.7 GB/s there) or 2 interleaved with SHA-NI. Every verity block is its own message, so the
 *   hot loop is exactly the library's case. It is loaded with dlopen when first asked for: an
 *   optional x86-64 library (Debian's libipsec-mb1) that a device's initrd need not carry.
 *
 * adviseSequential(fd)
 *   Tells the kernel fd is read from start to end (a larger read-ahead for a cold page cache).
 */
#define _GNU_SOURCE
#include "napi-helpers.h"
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <limits.h>
#include <sys/uio.h>

#if defined(__x86_64__) && defined(__has_include)
#if __has_include(<intel-ipsec-mb.h>)
#define SEAL_MULTI_BUFFER 1
#define NO_COMPAT_IMB_API_053 /* the old names include SHA1, which is OpenSSL's */
#include <dlfcn.h>
#include <intel-ipsec-mb.h>
#include <pthread.h>
#include <stdio.h>
#endif
#endif

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

/*
 * out[i*stride ...] = H(prefix || block i || suffix) for the count blocks of data. The prefix
 * (the salt) is absorbed once; each block starts from a copy of that state. Returns 0 on success.
 */
static int hash_run(const EVP_MD *md, const uint8_t *data, size_t count, size_t block_size,
                    const uint8_t *prefix, size_t prefix_length, const uint8_t *suffix,
                    size_t suffix_length, uint8_t *out, size_t stride) {
  size_t digest_size = (size_t)EVP_MD_get_size(md);
  EVP_MD_CTX *base = EVP_MD_CTX_new();
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int ok = base != NULL && ctx != NULL && EVP_DigestInit_ex2(base, md, NULL) &&
           EVP_DigestUpdate(base, prefix, prefix_length);
  unsigned char digest[64];
  for (size_t i = 0; ok && i < count; i++) {
    ok = EVP_MD_CTX_copy_ex(ctx, base) && EVP_DigestUpdate(ctx, data + i * block_size, block_size) &&
         EVP_DigestUpdate(ctx, suffix, suffix_length) && EVP_DigestFinal_ex(ctx, digest, NULL);
    if (ok) memcpy(out + i * stride, digest, digest_size);
  }
  EVP_MD_CTX_free(base);
  EVP_MD_CTX_free(ctx);
  if (!ok) ERR_clear_error(); /* leave nothing on OpenSSL's error queue for node:crypto to trip over */
  return ok ? 0 : -1;
}

static EVP_MD *fetch(const char *name) {
  EVP_MD *md = EVP_MD_fetch(NULL, name, NULL);
  if (md == NULL) ERR_clear_error();
  return md;
}

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
  EVP_MD *md = fetch(name);
  if (md == NULL) return fail(env, "ERR_BLOCKHASH", "hashBlocks: unknown hash algorithm");
  size_t digest_size = (size_t)EVP_MD_get_size(md);
  size_t count = data_length / block_size;
  if (stride < digest_size || (count > 0 && (size_t)out_offset + (count - 1) * stride + digest_size > out_length)) {
    EVP_MD_free(md);
    return fail(env, "ERR_BLOCKHASH", "hashBlocks: the output is too small");
  }
  int failed = hash_run(md, data, count, block_size, prefix, prefix_length, suffix, suffix_length,
                        out + out_offset, stride);
  EVP_MD_free(md);
  if (failed) return fail(env, "ERR_BLOCKHASH", "hashBlocks: OpenSSL failed");
  return NULL;
}

/* One hashFileBlocks call: its arguments, kept alive until it settles, and its outcome. */
struct file_job {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref out_ref;
  EVP_MD *md;
  int fd;
  int64_t position;
  uint8_t *out, *salt; /* salt: prefix then suffix, copied */
  size_t count, block_size, prefix_length, suffix_length, stride, digest_size;
  size_t got;
  int multi_buffer; /* hash with the multi-buffer engine */
  int error;        /* errno of a failed read, or ENOMEM */
  int hashing;      /* the hash library failed */
};

/* Bytes read and hashed per step: small enough to stay in a core's cache between the two. */
#define STRETCH (256u << 10)

/* Each of libuv's threads keeps one read buffer for all its calls (freed with the process). */
static __thread uint8_t *thread_buffer;
static __thread size_t thread_buffer_size;

/* This thread's read buffer, at least size bytes; NULL when out of memory. */
static uint8_t *read_buffer(size_t size) {
  if (thread_buffer_size < size) {
    free(thread_buffer);
    thread_buffer = malloc(size);
    thread_buffer_size = thread_buffer == NULL ? 0 : size;
  }
  return thread_buffer;
}

/* Fills buffer from fd at position; the bytes it got (fewer only at the end of the file), or -1. */
static ssize_t read_fully(int fd, uint8_t *buffer, size_t length, int64_t position) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = pread(fd, buffer + done, length - done, (off_t)(position + (int64_t)done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    done += (size_t)n;
  }
  return (ssize_t)done;
}

#ifdef SEAL_MULTI_BUFFER
static void file_job_execute_lanes(struct file_job *job);
#endif

static void file_job_execute(napi_env env, void *data) {
  (void)env;
  struct file_job *job = data;
#ifdef SEAL_MULTI_BUFFER
  if (job->multi_buffer) {
    file_job_execute_lanes(job);
    return;
  }
#endif
  /* Whole blocks per stretch; at least one block (blocks are at most 64 KiB). */
  size_t per_stretch = STRETCH / job->block_size > 0 ? STRETCH / job->block_size : 1;
  if (read_buffer(per_stretch * job->block_size) == NULL) {
    job->error = ENOMEM;
    return;
  }
  for (size_t done = 0; done < job->count; done += per_stretch) {
    size_t blocks = job->count - done < per_stretch ? job->count - done : per_stretch;
    size_t length = blocks * job->block_size;
    ssize_t got = read_fully(job->fd, thread_buffer, length, job->position + (int64_t)(done * job->block_size));
    if (got < 0) {
      job->error = errno;
      return;
    }
    job->got += (size_t)got;
    if ((size_t)got < length) memset(thread_buffer + got, 0, length - (size_t)got);
    if (hash_run(job->md, thread_buffer, blocks, job->block_size, job->salt, job->prefix_length,
                 job->salt + job->prefix_length, job->suffix_length, job->out + done * job->stride, job->stride)) {
      job->hashing = 1;
      return;
    }
  }
}

#ifdef SEAL_MULTI_BUFFER
/*
 * The multi-buffer engine: libIPSec_MB, opened once. Its managers are not thread-safe, so each
 * of libuv's threads has one of its own. Used only when the library at run time is the version
 * whose structures this file was compiled against.
 */
static struct {
  IMB_MGR *(*alloc)(uint64_t flags);
  void (*init)(IMB_MGR *mgr, IMB_ARCH *arch);
  char name[64];
} engine;
/* The longest message it takes (measured: 1.3 fails longer ones); 64 KiB blocks go to OpenSSL. */
#define ENGINE_MAX_MESSAGE 65534u
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static __thread IMB_MGR *thread_mgr;

static void engine_open(void) {
  void *library = dlopen("libIPSec_MB.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == NULL) return;
  unsigned (*version)(void) = (unsigned (*)(void))dlsym(library, "imb_get_version");
  IMB_MGR *(*alloc)(uint64_t) = (IMB_MGR * (*)(uint64_t)) dlsym(library, "alloc_mb_mgr");
  void (*init)(IMB_MGR *, IMB_ARCH *) = (void (*)(IMB_MGR *, IMB_ARCH *))dlsym(library, "init_mb_mgr_auto");
  void (*release)(IMB_MGR *) = (void (*)(IMB_MGR *))dlsym(library, "free_mb_mgr");
  if (version == NULL || alloc == NULL || init == NULL || release == NULL || version() != IMB_VERSION_NUM) {
    dlclose(library);
    return;
  }
  /* Which code it picks for this CPU, for the name. */
  IMB_MGR *probe = alloc(0);
  if (probe == NULL) {
    dlclose(library);
    return;
  }
  IMB_ARCH arch = IMB_ARCH_NONE;
  init(probe, &arch);
  const char *arches[] = {"none", "no AES-NI", "SSE", "AVX", "AVX2", "AVX512"};
  const char *shani = (arch == IMB_ARCH_SSE && (probe->features & IMB_FEATURE_SHANI)) ? " SHA-NI" : "";
  snprintf(engine.name, sizeof engine.name, "intel-ipsec-mb %u.%u.%u %s%s", IMB_VERSION_NUM >> 16,
           (IMB_VERSION_NUM >> 8) & 0xff, IMB_VERSION_NUM & 0xff, arch < IMB_ARCH_NUM ? arches[arch] : "?", shani);
  release(probe);
  engine.alloc = alloc;
  engine.init = init;
}

static int engine_available(void) {
  pthread_once(&engine_once, engine_open);
  return engine.alloc != NULL;
}

/* Reads up to the iovecs' total from fd at position, resuming after short reads; the bytes got. */
static ssize_t readv_fully(int fd, struct iovec *iov, int count, int64_t position) {
  size_t done = 0;
  while (count > 0) {
    ssize_t n = preadv(fd, iov, count > IOV_MAX ? IOV_MAX : count, (off_t)(position + (int64_t)done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    done += (size_t)n;
    while (count > 0 && (size_t)n >= iov->iov_len) {
      n -= (ssize_t)iov->iov_len;
      iov++;
      count--;
    }
    if (count > 0) {
      iov->iov_base = (uint8_t *)iov->iov_base + n;
      iov->iov_len -= (size_t)n;
    }
  }
  return (ssize_t)done;
}

/* Takes back the jobs the manager has finished; 0 if one of them failed. */
static int jobs_done(IMB_MGR *mgr, IMB_JOB *finished) {
  int ok = 1;
  for (; finished != NULL; finished = IMB_GET_COMPLETED_JOB(mgr))
    if (finished->status != IMB_STATUS_COMPLETED) ok = 0;
  return ok;
}

/*
 * Each block is its own message, so the stretch is laid out as slots of prefix ‖ block ‖ suffix:
 * one preadv fills the blocks in place, then every slot goes to the engine as a job.
 */
static void file_job_execute_lanes(struct file_job *job) {
  if (thread_mgr == NULL) {
    thread_mgr = engine.alloc(0);
    if (thread_mgr == NULL) {
      job->error = ENOMEM;
      return;
    }
    IMB_ARCH arch;
    engine.init(thread_mgr, &arch);
  }
  IMB_MGR *mgr = thread_mgr;
  IMB_HASH_ALG alg = job->digest_size == 20 ? IMB_AUTH_SHA_1 : job->digest_size == 32 ? IMB_AUTH_SHA_256 : IMB_AUTH_SHA_512;
  /* At least 16 blocks a stretch, so that AVX-512's 16 lanes are full even for 64 KiB blocks. */
  size_t per_stretch = STRETCH / job->block_size > 16 ? STRETCH / job->block_size : 16;
  size_t slot = job->prefix_length + job->block_size + job->suffix_length;
  uint8_t *buffer = read_buffer(per_stretch * (slot + sizeof(struct iovec)));
  if (buffer == NULL) {
    job->error = ENOMEM;
    return;
  }
  struct iovec *iov = (struct iovec *)(buffer + per_stretch * slot);
  for (size_t done = 0; done < job->count; done += per_stretch) {
    size_t blocks = job->count - done < per_stretch ? job->count - done : per_stretch;
    for (size_t i = 0; i < blocks; i++) {
      uint8_t *s = buffer + i * slot;
      memcpy(s, job->salt, job->prefix_length);
      memcpy(s + job->prefix_length + job->block_size, job->salt + job->prefix_length, job->suffix_length);
      iov[i] = (struct iovec){.iov_base = s + job->prefix_length, .iov_len = job->block_size};
    }
    ssize_t got = readv_fully(job->fd, iov, (int)blocks, job->position + (int64_t)(done * job->block_size));
    if (got < 0) {
      job->error = errno;
      return;
    }
    job->got += (size_t)got;
    for (size_t i = (size_t)got / job->block_size; i < blocks; i++) {
      size_t have = i == (size_t)got / job->block_size ? (size_t)got % job->block_size : 0;
      memset(buffer + i * slot + job->prefix_length + have, 0, job->block_size - have);
    }
    int ok = 1;
    for (size_t i = 0; i < blocks; i++) {
      IMB_JOB *j = IMB_GET_NEXT_JOB(mgr);
      j->cipher_mode = IMB_CIPHER_NULL;
      j->cipher_direction = IMB_DIR_ENCRYPT;
      j->chain_order = IMB_ORDER_HASH_CIPHER;
      j->hash_alg = alg;
      j->src = buffer + i * slot;
      j->hash_start_src_offset_in_bytes = 0;
      j->msg_len_to_hash_in_bytes = slot;
      j->auth_tag_output = job->out + (done + i) * job->stride;
      j->auth_tag_output_len_in_bytes = job->digest_size;
      ok &= jobs_done(mgr, IMB_SUBMIT_JOB(mgr));
    }
    for (IMB_JOB *j; (j = IMB_FLUSH_JOB(mgr)) != NULL;) ok &= jobs_done(mgr, j);
    if (!ok) {
      job->hashing = 1;
      return;
    }
  }
}
#endif

static const char *errno_code(int error) {
  switch (error) {
    case EIO: return "EIO";
    case EBADF: return "EBADF";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case ENXIO: return "ENXIO";
    case EOVERFLOW: return "EOVERFLOW";
    case ENOMEM: return "ENOMEM";
    default: return "ERR_BLOCKHASH_READ";
  }
}

static void file_job_complete(napi_env env, napi_status status, void *data) {
  struct file_job *job = data;
  napi_value result = NULL;
  int resolve = 0;
  if (status != napi_ok) {
    napi_value code, message;
    napi_create_string_utf8(env, "ERR_BLOCKHASH", NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, "hashFileBlocks was cancelled", NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, code, message, &result);
  } else if (job->error != 0) {
    napi_value code, message;
    napi_create_string_utf8(env, errno_code(job->error), NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, strerror(job->error), NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, code, message, &result);
  } else if (job->hashing) {
    napi_value code, message;
    napi_create_string_utf8(env, "ERR_BLOCKHASH", NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, "hashFileBlocks: hashing failed", NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, code, message, &result);
  } else {
    napi_create_double(env, (double)job->got, &result);
    resolve = 1;
  }
  if (resolve)
    napi_resolve_deferred(env, job->deferred, result);
  else
    napi_reject_deferred(env, job->deferred, result);
  napi_delete_reference(env, job->out_ref);
  napi_delete_async_work(env, job->work);
  EVP_MD_free(job->md);
  free(job->salt);
  free(job);
}

static napi_value hash_file_blocks(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 10)
    return fail(env, "ERR_BLOCKHASH", "hashFileBlocks takes 10 arguments");
  bool multi_buffer;
  int32_t fd;
  int64_t position;
  uint32_t block_size, stride, count;
  char name[16];
  size_t name_length;
  uint8_t *prefix, *suffix, *out;
  size_t prefix_length, suffix_length, out_length;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &position) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &block_size) != napi_ok ||
      napi_get_value_string_utf8(env, argv[3], name, sizeof name, &name_length) != napi_ok ||
      !bytes(env, argv[4], &prefix, &prefix_length) || !bytes(env, argv[5], &suffix, &suffix_length) ||
      napi_get_value_uint32(env, argv[6], &count) != napi_ok || !bytes(env, argv[7], &out, &out_length) ||
      napi_get_value_uint32(env, argv[8], &stride) != napi_ok ||
      napi_get_value_bool(env, argv[9], &multi_buffer) != napi_ok)
    return fail(env, "ERR_BLOCKHASH", "hashFileBlocks: bad argument types");
  if (fd < 0 || position < 0) return fail(env, "ERR_BLOCKHASH", "hashFileBlocks: bad file or position");
  if (block_size == 0 || block_size > (1u << 20))
    return fail(env, "ERR_BLOCKHASH", "hashFileBlocks: bad block size");
  EVP_MD *md = fetch(name);
  if (md == NULL) return fail(env, "ERR_BLOCKHASH", "hashFileBlocks: unknown hash algorithm");
  if (stride < (size_t)EVP_MD_get_size(md) ||
      (count > 0 && ((size_t)count - 1) * stride + (size_t)EVP_MD_get_size(md) > out_length)) {
    EVP_MD_free(md);
    return fail(env, "ERR_BLOCKHASH", "hashFileBlocks: the output is too small");
  }
  struct file_job *job = calloc(1, sizeof *job);
  uint8_t *salt = malloc(prefix_length + suffix_length + 1);
  if (job == NULL || salt == NULL) {
    free(job);
    free(salt);
    EVP_MD_free(md);
    return fail(env, "ERR_BLOCKHASH", "hashFileBlocks: out of memory");
  }
  memcpy(salt, prefix, prefix_length);
  memcpy(salt + prefix_length, suffix, suffix_length);
  *job = (struct file_job){
      .md = md,
      .fd = fd,
      .position = position,
      .out = out,
      .salt = salt,
      .count = count,
      .block_size = block_size,
      .prefix_length = prefix_length,
      .suffix_length = suffix_length,
      .stride = stride,
      .digest_size = (size_t)EVP_MD_get_size(md),
#ifdef SEAL_MULTI_BUFFER
      .multi_buffer = multi_buffer && prefix_length + block_size + suffix_length <= ENGINE_MAX_MESSAGE &&
                      engine_available(),
#endif
  };
  (void)multi_buffer;
  napi_value promise, resource_name;
  if (napi_create_reference(env, argv[7], 1, &job->out_ref) != napi_ok ||
      napi_create_promise(env, &job->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "seal:hashFileBlocks", NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_create_async_work(env, NULL, resource_name, file_job_execute, file_job_complete, job, &job->work) !=
          napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    /* Only reachable when the engine is out of memory; what was created leaks with the process. */
    return fail(env, "ERR_BLOCKHASH", "hashFileBlocks: could not queue the work");
  }
  return promise;
}

static napi_value advise_sequential(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok)
    return fail(env, "ERR_BLOCKHASH", "adviseSequential takes a file descriptor");
#ifdef POSIX_FADV_SEQUENTIAL
  (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL); /* advice only: failure changes nothing */
#endif
  return NULL;
}

static napi_value multi_buffer_engine(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result = NULL;
#ifdef SEAL_MULTI_BUFFER
  if (engine_available()) napi_create_string_utf8(env, engine.name, NAPI_AUTO_LENGTH, &result);
#endif
  if (result == NULL) napi_get_undefined(env, &result);
  return result;
}

NAPI_MODULE_INIT() {
  static const struct {
    const char *name;
    napi_callback fn;
  } functions[] = {
      {"hashBlocks", hash_blocks},
      {"hashFileBlocks", hash_file_blocks},
      {"adviseSequential", advise_sequential},
      {"multiBufferEngine", multi_buffer_engine},
  };
  for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++) {
    napi_value fn;
    if (napi_create_function(env, functions[i].name, NAPI_AUTO_LENGTH, functions[i].fn, NULL, &fn) != napi_ok ||
        napi_set_named_property(env, exports, functions[i].name, fn) != napi_ok)
      return NULL;
  }
  return exports;
}
