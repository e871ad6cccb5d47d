/* bench/flushdelay.so: an LD_PRELOAD shim that makes every flush as slow as
 * a real disk's (issue 13). fsync, fdatasync and syncfs call the real
 * function and then sleep FLUSHDELAY_US microseconds (default 2000): the
 * flush completes that much later, and whatever changed during the sleep is
 * not covered by it, as with a device whose cache flush takes that long.
 * The kernel of the benchmark machines has no device-mapper `delay` target,
 * so this is how every server gets the same slow disk: httpd through its
 * environment, Postfix through `import_environment` (its master passes only
 * what that lists to its daemons).
 *
 *   make bench/flushdelay.so
 *   LD_PRELOAD=$PWD/bench/flushdelay.so FLUSHDELAY_US=2000 program ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <time.h>

static long delay_us(void)
{
    static long us = -1;
    long v = __atomic_load_n(&us, __ATOMIC_RELAXED);
    if (v < 0) {
        const char *e = getenv("FLUSHDELAY_US");
        v = e && *e ? strtol(e, NULL, 10) : 2000;
        if (v < 0)
            v = 0;
        __atomic_store_n(&us, v, __ATOMIC_RELAXED);
    }
    return v;
}

static void flush_pause(void)
{
    int saved = errno;
    long us = delay_us();
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
    errno = saved;
}

static void *real(const char *name, void **slot)
{
    void *f = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!f) {
        f = dlsym(RTLD_NEXT, name);
        __atomic_store_n(slot, f, __ATOMIC_RELEASE);
    }
    return f;
}

#define SHIM(name)                                                                                                     \
    int name(int fd)                                                                                                   \
    {                                                                                                                  \
        static void *slot;                                                                                             \
        int (*f)(int) = (int (*)(int))real(#name, &slot);                                                              \
        if (!f) {                                                                                                      \
            errno = ENOSYS;                                                                                            \
            return -1;                                                                                                 \
        }                                                                                                              \
        int rc = f(fd);                                                                                                \
        flush_pause();                                                                                                 \
        return rc;                                                                                                     \
    }

SHIM(fsync)
SHIM(fdatasync)
SHIM(syncfs)
