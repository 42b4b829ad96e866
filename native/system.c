/*
 * The system calls of an init process that Node.js lacks, for the Seal agent running as PID 1:
 * mounting (and moving, and unmounting) filesystems, changing the root, loading kernel modules
 * from files, adding keys to the kernel's keyrings, and powering off or rebooting. Arguments are strings; failures throw an Error whose
 * `code` is the errno name, like Node's own.
 */
#define _GNU_SOURCE
#include "napi-helpers.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/reboot.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A malloc'ed copy of a string argument; NULL for null/undefined (an absent optional argument). */
static char *string_argument(napi_env env, napi_value value, int *ok) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) return (*ok = 0), NULL;
  if (type == napi_null || type == napi_undefined) return NULL;
  size_t length;
  if (type != napi_string || napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) return (*ok = 0), NULL;
  char *text = malloc(length + 1);
  if (text == NULL || napi_get_value_string_utf8(env, value, text, length + 1, &length) != napi_ok) {
    free(text);
    return (*ok = 0), NULL;
  }
  return text;
}

/* mount(source, target, type, flags, data): flags as a number (MS_* bits); source, type and data may be null. */
static napi_value do_mount(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  int ok = napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 5;
  char *source = ok ? string_argument(env, argv[0], &ok) : NULL;
  char *target = ok ? string_argument(env, argv[1], &ok) : NULL;
  char *type = ok ? string_argument(env, argv[2], &ok) : NULL;
  double flags = 0;
  ok = ok && target != NULL && napi_get_value_double(env, argv[3], &flags) == napi_ok;
  char *data = ok ? string_argument(env, argv[4], &ok) : NULL;
  int result = -1, error = 0;
  if (ok) {
    result = mount(source, target, type, (unsigned long)flags, data);
    error = errno;
  }
  char operation[300];
  snprintf(operation, sizeof operation, "mount %s", target ? target : "");
  free(source);
  free(target);
  free(type);
  free(data);
  if (!ok) return fail(env, "ERR_SYSTEM", "mount: bad arguments");
  return result == 0 ? NULL : throw_errno(env, operation, error);
}

/* umount(target, flags) */
static napi_value do_umount(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int ok = napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 2;
  char *target = ok ? string_argument(env, argv[0], &ok) : NULL;
  int32_t flags = 0;
  ok = ok && target != NULL && napi_get_value_int32(env, argv[1], &flags) == napi_ok;
  int result = ok ? umount2(target, flags) : -1;
  int error = errno;
  free(target);
  if (!ok) return fail(env, "ERR_SYSTEM", "umount: bad arguments");
  return result == 0 ? NULL : throw_errno(env, "umount", error);
}

/* chroot(path): changes the root of this process (and its later children) and moves into it. */
static napi_value do_chroot(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int ok = napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 1;
  char *path = ok ? string_argument(env, argv[0], &ok) : NULL;
  if (!ok || path == NULL) {
    free(path);
    return fail(env, "ERR_SYSTEM", "chroot: bad arguments");
  }
  int result = chroot(path);
  int error = errno;
  if (result == 0) {
    result = chdir("/");
    error = errno;
  }
  free(path);
  return result == 0 ? NULL : throw_errno(env, "chroot", error);
}

/* loadModule(path, parameters): finit_module of a .ko file. EEXIST (already loaded) is success. */
static napi_value load_module(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int ok = napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 2;
  char *path = ok ? string_argument(env, argv[0], &ok) : NULL;
  char *parameters = ok ? string_argument(env, argv[1], &ok) : NULL;
  if (!ok || path == NULL) {
    free(path);
    free(parameters);
    return fail(env, "ERR_SYSTEM", "loadModule: bad arguments");
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  int result = -1, error = errno;
  if (fd >= 0) {
    /* MODULE_INIT_COMPRESSED_FILE: the kernel decompresses .ko.xz/.ko.zst itself. */
    size_t n = strlen(path);
    int compressed = (n > 3 && strcmp(path + n - 3, ".xz") == 0) || (n > 4 && strcmp(path + n - 4, ".zst") == 0);
    result = (int)syscall(SYS_finit_module, fd, parameters ? parameters : "", compressed ? 4 : 0);
    error = errno;
    close(fd);
  }
  char operation[300];
  snprintf(operation, sizeof operation, "loading %s", path);
  free(path);
  free(parameters);
  if (result != 0 && error == EEXIST) return NULL;
  return result == 0 ? NULL : throw_errno(env, operation, error);
}

/* reboot(how): "poweroff", "reboot" or "halt"; syncs first. Returns only on failure. */
static napi_value do_reboot(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int ok = napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 1;
  char *how = ok ? string_argument(env, argv[0], &ok) : NULL;
  int command = -1;
  if (how != NULL) {
    if (strcmp(how, "poweroff") == 0) command = RB_POWER_OFF;
    else if (strcmp(how, "reboot") == 0) command = RB_AUTOBOOT;
    else if (strcmp(how, "halt") == 0) command = RB_HALT_SYSTEM;
  }
  free(how);
  if (command == -1) return fail(env, "ERR_SYSTEM", "reboot: poweroff, reboot or halt");
  sync();
  reboot(command);
  return throw_errno(env, "reboot", errno);
}

/* interfaceUp(name): sets a network interface up (the loopback, before services share it). */
static napi_value interface_up(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int ok = napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 1;
  char *name = ok ? string_argument(env, argv[0], &ok) : NULL;
  if (!ok || name == NULL || strlen(name) >= IFNAMSIZ) {
    free(name);
    return fail(env, "ERR_SYSTEM", "interfaceUp: an interface name");
  }
  struct ifreq request;
  memset(&request, 0, sizeof request);
  strcpy(request.ifr_name, name);
  free(name);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int result = fd < 0 ? -1 : ioctl(fd, SIOCGIFFLAGS, &request);
  if (result == 0) {
    request.ifr_flags |= IFF_UP;
    result = ioctl(fd, SIOCSIFFLAGS, &request);
  }
  int error = errno;
  if (fd >= 0) close(fd);
  return result == 0 ? NULL : throw_errno(env, "interfaceUp", error);
}

/* An IPv4 address argument into a sockaddr; 0 if the string is not one. */
static int ipv4(napi_env env, napi_value value, struct sockaddr *out) {
  int ok = 1;
  char *text = string_argument(env, value, &ok);
  struct sockaddr_in *in = (struct sockaddr_in *)out;
  memset(in, 0, sizeof *in);
  in->sin_family = AF_INET;
  ok = ok && text != NULL && inet_pton(AF_INET, text, &in->sin_addr) == 1;
  free(text);
  return ok;
}

/* configureInterface(name, address, netmask): an IPv4 address on an interface, which is set up. */
static napi_value configure_interface(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int ok = napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 3;
  char *name = ok ? string_argument(env, argv[0], &ok) : NULL;
  struct ifreq address, netmask;
  memset(&address, 0, sizeof address);
  memset(&netmask, 0, sizeof netmask);
  ok = ok && name != NULL && strlen(name) < IFNAMSIZ && ipv4(env, argv[1], &address.ifr_addr) &&
       ipv4(env, argv[2], &netmask.ifr_netmask);
  if (!ok) {
    free(name);
    return fail(env, "ERR_SYSTEM", "configureInterface: an interface name, an IPv4 address and a netmask");
  }
  strcpy(address.ifr_name, name);
  strcpy(netmask.ifr_name, name);
  free(name);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int result = fd < 0 ? -1 : ioctl(fd, SIOCSIFADDR, &address);
  if (result == 0) result = ioctl(fd, SIOCSIFNETMASK, &netmask);
  if (result == 0) result = ioctl(fd, SIOCGIFFLAGS, &address);
  if (result == 0) {
    address.ifr_flags |= IFF_UP | IFF_RUNNING;
    result = ioctl(fd, SIOCSIFFLAGS, &address);
  }
  int error = errno;
  if (fd >= 0) close(fd);
  return result == 0 ? NULL : throw_errno(env, "configureInterface", error);
}

/* addDefaultRoute(gateway): the IPv4 default route. */
static napi_value add_default_route(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  struct rtentry route;
  memset(&route, 0, sizeof route);
  int ok = napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 1 &&
           ipv4(env, argv[0], &route.rt_gateway);
  if (!ok) return fail(env, "ERR_SYSTEM", "addDefaultRoute: an IPv4 gateway");
  ((struct sockaddr_in *)&route.rt_dst)->sin_family = AF_INET;
  ((struct sockaddr_in *)&route.rt_genmask)->sin_family = AF_INET;
  route.rt_flags = RTF_UP | RTF_GATEWAY;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int result = fd < 0 ? -1 : ioctl(fd, SIOCADDRT, &route);
  int error = errno;
  if (fd >= 0) close(fd);
  return result == 0 ? NULL : throw_errno(env, "addDefaultRoute", error);
}

/*
 * addKey(keyring, type, payload): add_key(2) of a key of `type` (e.g. "asymmetric": an X.509
 * certificate in DER, its description made by the kernel) to the keyring with this serial number.
 * Returns the new key's serial number.
 */
static napi_value add_key_to(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t keyring = 0;
  uint8_t *payload = NULL;
  size_t length = 0;
  int ok = napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 3 &&
           napi_get_value_int32(env, argv[0], &keyring) == napi_ok;
  char *type = ok ? string_argument(env, argv[1], &ok) : NULL;
  ok = ok && type != NULL && bytes(env, argv[2], &payload, &length);
  if (!ok) {
    free(type);
    return fail(env, "ERR_SYSTEM", "addKey: a keyring serial number, a key type and the payload bytes");
  }
  long serial = syscall(SYS_add_key, type, "", payload, length, keyring);
  int error = errno;
  free(type);
  if (serial < 0) return throw_errno(env, "add_key", error);
  napi_value result;
  napi_create_int32(env, (int32_t)serial, &result);
  return result;
}

/* restrictKeyring(keyring): KEYCTL_RESTRICT_KEYRING with no restriction: nothing may be added to it any more. */
static napi_value restrict_keyring(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t keyring = 0;
  int ok = napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 1 &&
           napi_get_value_int32(env, argv[0], &keyring) == napi_ok;
  if (!ok) return fail(env, "ERR_SYSTEM", "restrictKeyring: a keyring serial number");
  /* KEYCTL_RESTRICT_KEYRING is 29. */
  long result = syscall(SYS_keyctl, 29, keyring, NULL, NULL);
  return result == 0 ? NULL : throw_errno(env, "keyctl restrict_keyring", errno);
}

NAPI_MODULE_INIT() {
  static const struct {
    const char *name;
    napi_callback function;
  } functions[] = {
      {"mount", do_mount}, {"umount", do_umount}, {"chroot", do_chroot},
      {"loadModule", load_module}, {"reboot", do_reboot}, {"interfaceUp", interface_up},
      {"configureInterface", configure_interface}, {"addDefaultRoute", add_default_route},
      {"addKey", add_key_to}, {"restrictKeyring", restrict_keyring},
  };
  for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++) {
    napi_value fn;
    if (napi_create_function(env, functions[i].name, NAPI_AUTO_LENGTH, functions[i].function, NULL, &fn) != napi_ok ||
        napi_set_named_property(env, exports, functions[i].name, fn) != napi_ok)
      return NULL;
  }
  return exports;
}
