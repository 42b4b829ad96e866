/*
 * The filesystem calls Node.js lacks, so that nothing from an input ever passes through a text
 * script or a command line: extended attributes of one path (never following a final symlink),
 * device and FIFO nodes, nanosecond timestamps, and opening a path confined beneath a directory
 * (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or a component walk with O_NOFOLLOW where the
 * kernel predates openat2), and fs-verity's ioctls (enable, with a built-in signature, and
 * measure) on an open file.
 *
 * Paths and names are Buffers (byte strings); failures throw an Error whose `code` is the errno
 * name ("ENOENT") and whose `errno` is its number, like Node's own fs errors.
 */
#define _GNU_SOURCE
#include "napi-helpers.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/fsverity.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

/* A NUL-terminated copy of a Buffer argument (free() it); NULL if it is not bytes or holds a NUL. */
static char *c_string(napi_env env, napi_value value) {
  uint8_t *data;
  size_t length;
  if (!bytes(env, value, &data, &length) || memchr(data, 0, length) != NULL) return NULL;
  char *copy = malloc(length + 1);
  if (copy == NULL) return NULL;
  memcpy(copy, data, length);
  copy[length] = 0;
  return copy;
}

static int arguments(napi_env env, napi_callback_info info, size_t expected, napi_value *argv) {
  size_t argc = expected;
  return napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == expected;
}

#define BAD_ARGUMENTS(name) fail(env, "ERR_FSOPS", name ": bad arguments (paths and names are Buffers without NUL)")

/* listXattrs(path): the names of path's extended attributes ([] where the filesystem has none). */
static napi_value list_xattrs(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char *path = arguments(env, info, 1, argv) ? c_string(env, argv[0]) : NULL;
  if (path == NULL) return BAD_ARGUMENTS("listXattrs");
  char *list = NULL;
  ssize_t size;
  for (;;) {
    size = llistxattr(path, NULL, 0);
    if (size <= 0) break;
    char *grown = realloc(list, (size_t)size);
    if (grown == NULL) {
      size = -1;
      errno = ENOMEM;
      break;
    }
    list = grown;
    size = llistxattr(path, list, (size_t)size);
    if (size >= 0 || errno != ERANGE) break; /* ERANGE: an attribute was added meanwhile */
  }
  int error = errno;
  free(path);
  napi_value result;
  napi_create_array(env, &result);
  if (size < 0) {
    free(list);
    if (error == ENOTSUP) return result;
    return throw_errno(env, "llistxattr", error);
  }
  uint32_t index = 0;
  for (ssize_t at = 0; at < size;) {
    size_t length = strnlen(list + at, (size_t)(size - at));
    napi_value name;
    void *copy;
    napi_create_buffer_copy(env, length, list + at, &copy, &name);
    napi_set_element(env, result, index++, name);
    at += (ssize_t)length + 1;
  }
  free(list);
  return result;
}

/* getXattr(path, name): the value. */
static napi_value get_xattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char *path = NULL, *name = NULL;
  if (arguments(env, info, 2, argv)) {
    path = c_string(env, argv[0]);
    name = c_string(env, argv[1]);
  }
  if (path == NULL || name == NULL) {
    free(path);
    free(name);
    return BAD_ARGUMENTS("getXattr");
  }
  char *value = NULL;
  ssize_t size;
  for (;;) {
    size = lgetxattr(path, name, NULL, 0);
    if (size < 0) break;
    char *grown = realloc(value, size > 0 ? (size_t)size : 1);
    if (grown == NULL) {
      size = -1;
      errno = ENOMEM;
      break;
    }
    value = grown;
    size = lgetxattr(path, name, value, (size_t)size);
    if (size >= 0 || errno != ERANGE) break;
  }
  int error = errno;
  free(path);
  free(name);
  if (size < 0) {
    free(value);
    return throw_errno(env, "lgetxattr", error);
  }
  napi_value result;
  void *copy;
  napi_create_buffer_copy(env, (size_t)size, value, &copy, &result);
  free(value);
  return result;
}

/* setXattr(path, name, value): sets one attribute of path itself (a symlink is not followed). */
static napi_value set_xattr(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char *path = NULL, *name = NULL;
  uint8_t *value = NULL;
  size_t length = 0;
  if (arguments(env, info, 3, argv)) {
    path = c_string(env, argv[0]);
    name = c_string(env, argv[1]);
  }
  if (path == NULL || name == NULL || !bytes(env, argv[2], &value, &length)) {
    free(path);
    free(name);
    return BAD_ARGUMENTS("setXattr");
  }
  int result = lsetxattr(path, name, value, length, 0);
  int error = errno;
  free(path);
  free(name);
  return result == 0 ? NULL : throw_errno(env, "lsetxattr", error);
}

/* mknod(path, mode, major, minor): a character or block device, or a FIFO (mode with its type bits). */
static napi_value make_node(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint32_t mode, major, minor;
  char *path = arguments(env, info, 4, argv) ? c_string(env, argv[0]) : NULL;
  if (path == NULL || napi_get_value_uint32(env, argv[1], &mode) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &major) != napi_ok || napi_get_value_uint32(env, argv[3], &minor) != napi_ok) {
    free(path);
    return BAD_ARGUMENTS("mknod");
  }
  mode_t type = mode & S_IFMT;
  if (type != S_IFCHR && type != S_IFBLK && type != S_IFIFO) {
    free(path);
    return fail(env, "ERR_FSOPS", "mknod: only character devices, block devices and FIFOs");
  }
  int result = mknod(path, (mode_t)mode, makedev(major, minor));
  int error = errno;
  free(path);
  return result == 0 ? NULL : throw_errno(env, "mknod", error);
}

/* setTimes(path, seconds, nanoseconds): access and modification time of path itself, to the nanosecond. */
static napi_value set_times(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int64_t seconds;
  uint32_t nanoseconds;
  char *path = arguments(env, info, 3, argv) ? c_string(env, argv[0]) : NULL;
  if (path == NULL || napi_get_value_int64(env, argv[1], &seconds) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &nanoseconds) != napi_ok || nanoseconds > 999999999) {
    free(path);
    return BAD_ARGUMENTS("setTimes");
  }
  struct timespec times[2] = {{.tv_sec = seconds, .tv_nsec = nanoseconds},
                              {.tv_sec = seconds, .tv_nsec = nanoseconds}};
  int result = utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW);
  int error = errno;
  free(path);
  return result == 0 ? NULL : throw_errno(env, "utimensat", error);
}

/* The component walk used where openat2 is missing: every component opened without following links. */
static int open_walk(int directory, char *path, int flags, mode_t mode) {
  int current = dup(directory);
  char *save = NULL;
  char *part = strtok_r(path, "/", &save);
  while (current >= 0 && part != NULL) {
    char *next = strtok_r(NULL, "/", &save);
    int opened;
    if (strcmp(part, "..") == 0) {
      errno = EXDEV;
      opened = -1;
    } else if (next == NULL) {
      opened = openat(current, part, flags | O_NOFOLLOW | O_CLOEXEC, mode);
    } else {
      opened = openat(current, part, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    int error = errno;
    close(current);
    errno = error;
    current = opened;
    part = next;
  }
  return current;
}

/*
 * openBeneath(root, path, flags, mode): a file descriptor for `path` resolved inside the directory
 * `root`; `..` out of it, absolute paths and symlinks anywhere on the way fail (EXDEV or ELOOP).
 */
static napi_value open_beneath(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t flags;
  uint32_t mode;
  char *root = NULL, *path = NULL;
  if (arguments(env, info, 4, argv)) {
    root = c_string(env, argv[0]);
    path = c_string(env, argv[1]);
  }
  if (root == NULL || path == NULL || napi_get_value_int32(env, argv[2], &flags) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &mode) != napi_ok) {
    free(root);
    free(path);
    return BAD_ARGUMENTS("openBeneath");
  }
  int fd = -1;
  int error = 0;
  int directory = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (directory < 0) {
    error = errno;
  } else if (path[0] == '/') {
    error = EXDEV;
  } else {
    struct open_how how = {
        .flags = (uint64_t)(uint32_t)flags | O_CLOEXEC,
        .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    fd = (int)syscall(SYS_openat2, directory, path, &how, sizeof how);
    if (fd < 0 && errno == ENOSYS) fd = open_walk(directory, path, flags, (mode_t)mode);
    error = errno;
    close(directory);
  }
  free(root);
  free(path);
  if (fd < 0) return throw_errno(env, "open", error);
  napi_value result;
  napi_create_int32(env, fd, &result);
  return result;
}

/*
 * enableVerity(fd, algorithm, blockSize, salt, signature): FS_IOC_ENABLE_VERITY on an open
 * (read-only) file; salt and signature are Uint8Arrays, possibly empty. The kernel hashes the whole
 * file, then checks the signature, if any, against the .fs-verity keyring.
 */
static napi_value enable_verity(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int32_t fd;
  uint32_t algorithm, block_size;
  uint8_t *salt, *signature;
  size_t salt_size, signature_size;
  if (!arguments(env, info, 5, argv) || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &algorithm) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &block_size) != napi_ok || !bytes(env, argv[3], &salt, &salt_size) ||
      !bytes(env, argv[4], &signature, &signature_size) || salt_size > 32 || signature_size > UINT32_MAX)
    return fail(env, "ERR_FSOPS", "enableVerity: bad arguments");
  struct fsverity_enable_arg arg;
  memset(&arg, 0, sizeof arg);
  arg.version = 1;
  arg.hash_algorithm = algorithm;
  arg.block_size = block_size;
  arg.salt_size = (uint32_t)salt_size;
  arg.salt_ptr = (uintptr_t)(salt_size ? salt : NULL);
  arg.sig_size = (uint32_t)signature_size;
  arg.sig_ptr = (uintptr_t)(signature_size ? signature : NULL);
  if (ioctl(fd, FS_IOC_ENABLE_VERITY, &arg) != 0) return throw_errno(env, "FS_IOC_ENABLE_VERITY", errno);
  return NULL;
}

/* measureVerity(fd): { algorithm, digest } of a verity file (FS_IOC_MEASURE_VERITY). */
static napi_value measure_verity(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!arguments(env, info, 1, argv) || napi_get_value_int32(env, argv[0], &fd) != napi_ok)
    return fail(env, "ERR_FSOPS", "measureVerity: bad arguments");
  struct {
    struct fsverity_digest header;
    uint8_t digest[64];
  } measured;
  memset(&measured, 0, sizeof measured);
  measured.header.digest_size = sizeof measured.digest;
  if (ioctl(fd, FS_IOC_MEASURE_VERITY, &measured) != 0) return throw_errno(env, "FS_IOC_MEASURE_VERITY", errno);
  napi_value result, algorithm, digest;
  void *data;
  napi_create_object(env, &result);
  napi_create_uint32(env, measured.header.digest_algorithm, &algorithm);
  napi_create_buffer_copy(env, measured.header.digest_size, measured.digest, &data, &digest);
  napi_set_named_property(env, result, "algorithm", algorithm);
  napi_set_named_property(env, result, "digest", digest);
  return result;
}

/* syncFilesystem(fd): syncfs(2) — everything written to the filesystem holding `fd` made durable at once. */
static napi_value sync_filesystem(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!arguments(env, info, 1, argv) || napi_get_value_int32(env, argv[0], &fd) != napi_ok)
    return fail(env, "ERR_FSOPS", "syncFilesystem: bad arguments");
  if (syncfs(fd) != 0) return throw_errno(env, "syncfs", errno);
  return NULL;
}

NAPI_MODULE_INIT() {
  static const struct {
    const char *name;
    napi_callback function;
  } functions[] = {
      {"listXattrs", list_xattrs}, {"getXattr", get_xattr},   {"setXattr", set_xattr},
      {"mknod", make_node},        {"setTimes", set_times},   {"openBeneath", open_beneath},
      {"enableVerity", enable_verity}, {"measureVerity", measure_verity},
      {"syncFilesystem", sync_filesystem},
  };
  for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++) {
    napi_value fn;
    if (napi_create_function(env, functions[i].name, NAPI_AUTO_LENGTH, functions[i].function, NULL, &fn) != napi_ok ||
        napi_set_named_property(env, exports, functions[i].name, fn) != napi_ok)
      return NULL;
  }
  return exports;
}
