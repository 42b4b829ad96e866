/* Argument helpers shared by the addons in native/. */
#ifndef SEAL_NAPI_HELPERS_H
#define SEAL_NAPI_HELPERS_H
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>

/* Throws a JavaScript Error with this code and returns NULL, for `return fail(...)`. */
static inline napi_value fail(napi_env env, const char *code, const char *message) {
  napi_throw_error(env, code, message);
  return NULL;
}

/* The bytes of a Uint8Array (or Buffer) argument; 0 if it is anything else. */
static inline int bytes(napi_env env, napi_value value, uint8_t **data, size_t *length) {
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  void *raw;
  if (napi_get_typedarray_info(env, value, &type, length, &raw, &buffer, &offset) != napi_ok ||
      type != napi_uint8_array)
    return 0;
  *data = raw;
  return 1;
}
#ifdef _GNU_SOURCE
#include <stdio.h>
#include <string.h>
/* Throws an Error like Node's fs errors: `code` the errno name ("ENOENT"), `errno` its number. */
static inline napi_value throw_errno(napi_env env, const char *operation, int error) {
  const char *name = strerrorname_np(error);
  char message[512];
  snprintf(message, sizeof message, "%s: %s", operation, strerror(error));
  napi_value code, text, object, number;
  napi_create_string_utf8(env, name ? name : "EIO", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &object);
  napi_create_int32(env, error, &number);
  napi_set_named_property(env, object, "errno", number);
  napi_throw(env, object);
  return NULL;
}
#endif
#endif
