/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * guestwork: the test guest's agent.  It reads one command per line from a
 * serial port and answers each with exactly one line,
 *
 *     GW: {"cmd":"NAME","ok":true,...}
 *
 * so that a test on the host can drive the guest's disks, memory and clock
 * and parse the answers among whatever else the port carries (the marker
 * keeps kernel messages on a shared console from passing for answers).
 * The protocol is described in tests/guest/README.md.
 *
 * Static, C11 + POSIX/Linux, no dependency beyond libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define BLOCK       4096            /* unit of the pattern and of io-latency */
#define REQ         (1024 * 1024)   /* one write/verify request */
#define LINE_MAX_GW 1024
#define MAX_ARGS    8
#define MAX_JOBS    16
#define MAGIC       "GWBLK1"

/* ---- one answer line ---------------------------------------------------- */

typedef struct {
    char buf[2048];
    size_t len;
    bool ok;
} Answer;

static void ans_raw(Answer *a, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (a->len >= sizeof(a->buf)) {
        return;
    }
    va_start(ap, fmt);
    n = vsnprintf(a->buf + a->len, sizeof(a->buf) - a->len, fmt, ap);
    va_end(ap);
    if (n > 0) {
        a->len += (size_t)n;
        if (a->len > sizeof(a->buf) - 1) {
            a->len = sizeof(a->buf) - 1;
        }
    }
}

/* JSON string: escape what JSON requires, so error texts never break it. */
static void ans_str(Answer *a, const char *key, const char *s)
{
    ans_raw(a, ",\"%s\":\"", key);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            ans_raw(a, "\\%c", c);
        } else if (c < 0x20 || c >= 0x7f) {
            ans_raw(a, "\\u%04x", c);
        } else {
            ans_raw(a, "%c", c);
        }
    }
    ans_raw(a, "\"");
}

static void ans_int(Answer *a, const char *key, long long v)
{
    ans_raw(a, ",\"%s\":%lld", key, v);
}

static void ans_num(Answer *a, const char *key, double v)
{
    ans_raw(a, ",\"%s\":%.6f", key, v);
}

static void ans_begin(Answer *a, const char *cmd)
{
    a->len = 0;
    a->ok = true;
    /* the first member has no leading comma: write it by hand */
    ans_raw(a, "{\"cmd\":\"");
    for (; *cmd; cmd++) {
        unsigned char c = (unsigned char)*cmd;
        bool plain = c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
        ans_raw(a, "%c", plain ? c : '?');
    }
    ans_raw(a, "\"");
}

/* Turns the answer into a failure; only the first error is kept. */
static void ans_fail(Answer *a, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (!a->ok) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    a->ok = false;
    ans_str(a, "error", msg);
}

static void ans_end(Answer *a)
{
    ans_raw(a, ",\"ok\":%s}", a->ok ? "true" : "false");
}

/* ---- time and statistics ------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Latencies: a growing array, sorted once for the percentiles. */
typedef struct {
    double *v;
    size_t n, cap;
} Lat;

static void lat_add(Lat *l, double s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        double *v = realloc(l->v, cap * sizeof(*v));
        if (!v) {
            return;     /* keep what we have rather than fail the command */
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = s;
}

static void lat_report(Answer *a, Lat *l)
{
    ans_int(a, "count", (long long)l->n);
    if (l->n == 0) {
        return;
    }
    qsort(l->v, l->n, sizeof(double), cmp_double);
    ans_int(a, "p50_us", (long long)(l->v[(l->n - 1) * 50 / 100] * 1e6));
    ans_int(a, "p99_us", (long long)(l->v[(l->n - 1) * 99 / 100] * 1e6));
    ans_int(a, "max_us", (long long)(l->v[l->n - 1] * 1e6));
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

/* ---- disks --------------------------------------------------------------- */

static int open_dev(Answer *a, const char *name, int flags, uint64_t *size)
{
    char path[256];
    int fd;

    snprintf(path, sizeof(path), "%s%s", name[0] == '/' ? "" : "/dev/", name);
    fd = open(path, flags | O_DIRECT | O_CLOEXEC);
    if (fd < 0) {
        ans_fail(a, "open %s: %s", path, strerror(errno));
        return -1;
    }
    if (ioctl(fd, BLKGETSIZE64, size) < 0) {
        /* a regular file works too, which helps testing on the host */
        struct stat st;
        if (fstat(fd, &st) < 0) {
            ans_fail(a, "size of %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        *size = (uint64_t)st.st_size;
    }
    return fd;
}

/*
 * The bytes of block BLK for PATTERN: a header naming the pattern and the
 * block, then a pseudo-random stream seeded by both.  A stale copy (another
 * pattern), a block written to the wrong place (another number) and a torn
 * block (the stream) all fail verify, and the header says what was found.
 */
static uint64_t seed_of(const char *pattern, uint64_t blk)
{
    uint64_t h = 1469598103934665603ULL;    /* FNV-1a */

    for (const char *p = pattern; *p; p++) {
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    }
    h ^= blk * 0x9e3779b97f4a7c15ULL;
    return h ? h : 1;
}

static void fill_block(uint8_t *b, const char *pattern, uint64_t blk)
{
    uint64_t x = seed_of(pattern, blk);
    uint64_t *w = (uint64_t *)b;

    for (size_t i = 0; i < BLOCK / 8; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w[i] = x;
    }
    memset(b, 0, 64);
    snprintf((char *)b, 64, MAGIC " %s %llu", pattern,
             (unsigned long long)blk);
}

static bool parse_mib(Answer *a, const char *s, uint64_t *bytes)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || end == s || v == 0 || v > (1ULL << 30)) {
        ans_fail(a, "bad MiB count '%s'", s);
        return false;
    }
    *bytes = v << 20;
    return true;
}

static bool parse_seconds(Answer *a, const char *s, double *sec)
{
    char *end;

    errno = 0;
    *sec = strtod(s, &end);
    if (errno || *end || end == s || !(*sec > 0) || *sec > 86400) {
        ans_fail(a, "bad seconds '%s'", s);
        return false;
    }
    return true;
}

/* write DEV PATTERN [MiB] and verify DEV PATTERN [MiB] */
static void cmd_disk(Answer *a, int argc, char **argv, bool write_it)
{
    uint64_t size, len;
    uint8_t *buf = NULL;
    Lat lat = { 0 };
    long long bad = 0, first_bad = -1;
    char found[64] = "";
    double t0;
    int fd;

    if (argc < 3 || argc > 4) {
        ans_fail(a, "usage: %s DEV PATTERN [MiB]", argv[0]);
        return;
    }
    if (strlen(argv[2]) > 32 || strchr(argv[2], ' ')) {
        ans_fail(a, "pattern longer than 32 characters");
        return;
    }
    fd = open_dev(a, argv[1], write_it ? O_RDWR : O_RDONLY, &size);
    if (fd < 0) {
        return;
    }
    len = size - size % REQ;
    if (argc == 4 && !parse_mib(a, argv[3], &len)) {
        goto out;
    }
    if (len > size || len % REQ) {
        ans_fail(a, "%llu bytes asked, device has %llu",
                 (unsigned long long)len, (unsigned long long)size);
        goto out;
    }
    /* O_DIRECT wants aligned memory */
    if (posix_memalign((void **)&buf, BLOCK, REQ)) {
        ans_fail(a, "out of memory");
        goto out;
    }
    t0 = now_s();
    for (uint64_t off = 0; off < len; off += REQ) {
        double t;
        ssize_t n;

        if (write_it) {
            for (size_t i = 0; i < REQ; i += BLOCK) {
                fill_block(buf + i, argv[2], (off + i) / BLOCK);
            }
            t = now_s();
            n = pwrite(fd, buf, REQ, (off_t)off);
        } else {
            t = now_s();
            n = pread(fd, buf, REQ, (off_t)off);
        }
        lat_add(&lat, now_s() - t);
        if (n != REQ) {
            ans_fail(a, "%s at %llu: %s", write_it ? "write" : "read",
                     (unsigned long long)off,
                     n < 0 ? strerror(errno) : "short transfer");
            goto out;
        }
        if (write_it) {
            continue;
        }
        for (size_t i = 0; i < REQ; i += BLOCK) {
            static _Thread_local uint8_t want[BLOCK];

            fill_block(want, argv[2], (off + i) / BLOCK);
            if (memcmp(want, buf + i, BLOCK) == 0) {
                continue;
            }
            if (bad++ == 0) {
                first_bad = (long long)(off + i);
                /* what is there instead: another pattern, another block? */
                if (memcmp(buf + i, MAGIC " ", 7) == 0) {
                    snprintf(found, sizeof(found), "%.63s", buf + i + 7);
                } else {
                    snprintf(found, sizeof(found), "no header");
                }
            }
        }
    }
    /* The write cache of virtio-blk: flush so that it reaches the image. */
    if (write_it && fdatasync(fd) < 0) {
        ans_fail(a, "fdatasync: %s", strerror(errno));
        goto out;
    }
    ans_int(a, "bytes", (long long)len);
    ans_num(a, "seconds", now_s() - t0);
    if (!write_it) {
        ans_int(a, "bad_blocks", bad);
        ans_int(a, "first_bad", first_bad);
        if (bad) {
            ans_str(a, "found", found);
        }
    }
    lat_report(a, &lat);
out:
    free(lat.v);
    free(buf);
    close(fd);
}

/* io-latency DEV SECONDS: 4 KiB O_DIRECT reads at random offsets */
static void cmd_io_latency(Answer *a, int argc, char **argv)
{
    uint64_t size, x = (uint64_t)time(NULL) | 1;
    uint8_t *buf = NULL;
    Lat lat = { 0 };
    double sec, t0, t;
    int fd;

    if (argc != 3) {
        ans_fail(a, "usage: io-latency DEV SECONDS");
        return;
    }
    if (!parse_seconds(a, argv[2], &sec)) {
        return;
    }
    fd = open_dev(a, argv[1], O_RDONLY, &size);
    if (fd < 0) {
        return;
    }
    if (size < BLOCK || posix_memalign((void **)&buf, BLOCK, BLOCK)) {
        ans_fail(a, size < BLOCK ? "device too small" : "out of memory");
        goto out;
    }
    t0 = now_s();
    for (t = t0; t - t0 < sec;) {
        double t1;
        off_t off;

        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        off = (off_t)(x % (size / BLOCK)) * BLOCK;
        if (pread(fd, buf, BLOCK, off) != BLOCK) {
            ans_fail(a, "read at %lld: %s", (long long)off, strerror(errno));
            goto out;
        }
        t1 = now_s();
        lat_add(&lat, t1 - t);
        t = t1;
    }
    ans_num(a, "seconds", t - t0);
    lat_report(a, &lat);
out:
    free(lat.v);
    free(buf);
    close(fd);
}

#define CLOCKSOURCE \
    "/sys/devices/system/clocksource/clocksource0/current_clocksource"

static void read_first_line(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "r");

    out[0] = 0;
    if (f) {
        if (fgets(out, (int)size, f)) {
            out[strcspn(out, "\n")] = 0;
        }
        fclose(f);
    }
}

/*
 * stall SECONDS: read the clock in a busy loop.  Any gap between two reads
 * is time this vCPU did not run: a host-side pause (QEMU holding its lock,
 * the vCPU thread descheduled) or the guest's own interrupts.
 */
static void cmd_stall(Answer *a, int argc, char **argv)
{
    double sec, t0, prev, max = 0, max_at = 0;
    char cs[64];
    long long over1 = 0, over10 = 0, over100 = 0, loops = 0;

    if (argc != 2) {
        ans_fail(a, "usage: stall SECONDS");
        return;
    }
    if (!parse_seconds(a, argv[1], &sec)) {
        return;
    }
    t0 = prev = now_s();
    while (prev - t0 < sec) {
        double t = now_s(), gap = t - prev;

        loops++;
        if (gap > max) {
            max = gap;
            max_at = prev - t0;
        }
        over1 += gap > 0.001;
        over10 += gap > 0.010;
        over100 += gap > 0.100;
        prev = t;
    }
    ans_num(a, "seconds", prev - t0);
    /* what a gap means depends on it: see tests/guest/README.md */
    read_first_line(CLOCKSOURCE, cs, sizeof(cs));
    ans_str(a, "clocksource", cs);
    ans_int(a, "loops", loops);
    ans_int(a, "max_gap_us", (long long)(max * 1e6));
    ans_num(a, "max_gap_at", max_at);
    ans_int(a, "gaps_over_1ms", over1);
    ans_int(a, "gaps_over_10ms", over10);
    ans_int(a, "gaps_over_100ms", over100);
}

/* touch MiB: memory that stays allocated and dirty until poweroff */
static pthread_mutex_t touch_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t touched;

static void cmd_touch(Answer *a, int argc, char **argv)
{
    uint64_t len;
    long page = sysconf(_SC_PAGESIZE);
    double t0;
    uint8_t *p;

    if (argc != 2) {
        ans_fail(a, "usage: touch MiB");
        return;
    }
    if (!parse_mib(a, argv[1], &len)) {
        return;
    }
    t0 = now_s();
    /* mmap, not malloc: a failure is an error here, not a later OOM kill */
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
             -1, 0);
    if (p == MAP_FAILED) {
        ans_fail(a, "mmap %llu MiB: %s", (unsigned long long)(len >> 20),
                 strerror(errno));
        return;
    }
    /* non-zero bytes: the host must back every page with its own memory */
    for (uint64_t i = 0; i < len; i += page) {
        p[i] = (uint8_t)(i / page) | 1;
    }
    pthread_mutex_lock(&touch_lock);
    touched += len;
    ans_int(a, "bytes", (long long)len);
    ans_int(a, "total_bytes", (long long)touched);
    pthread_mutex_unlock(&touch_lock);
    ans_num(a, "seconds", now_s() - t0);
}

/* info: what the test may want to check before it relies on the guest */
static void cmd_info(Answer *a)
{
    struct utsname u;
    char line[256], disks[512] = "";
    FILE *f;

    uname(&u);
    ans_str(a, "kernel", u.release);
    ans_int(a, "cpus", sysconf(_SC_NPROCESSORS_ONLN));
    ans_int(a, "mem_total_bytes",
            (long long)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE));
    read_first_line(CLOCKSOURCE, line, sizeof(line));
    ans_str(a, "clocksource", line);
    /* disks: "vda:268435456 vdb:..." from /proc/partitions */
    f = fopen("/proc/partitions", "r");
    if (f) {
        while (fgets(line, sizeof(line), f)) {
            unsigned long long kib;
            char name[64];
            if (sscanf(line, "%*u %*u %llu %63s", &kib, name) == 2 &&
                strncmp(name, "vd", 2) == 0 &&
                strlen(disks) + strlen(name) + 24 < sizeof(disks)) {
                snprintf(disks + strlen(disks), sizeof(disks) - strlen(disks),
                         "%s%s:%llu", disks[0] ? " " : "", name, kib * 1024);
            }
        }
        fclose(f);
    }
    ans_str(a, "disks", disks);
}

/* ---- commands and background jobs ---------------------------------------- */

static bool run_command(Answer *a, int argc, char **argv)
{
    const char *c = argv[0];

    if (!strcmp(c, "write") || !strcmp(c, "verify")) {
        cmd_disk(a, argc, argv, c[0] == 'w');
    } else if (!strcmp(c, "io-latency")) {
        cmd_io_latency(a, argc, argv);
    } else if (!strcmp(c, "stall")) {
        cmd_stall(a, argc, argv);
    } else if (!strcmp(c, "touch")) {
        cmd_touch(a, argc, argv);
    } else {
        return false;
    }
    return true;
}

typedef struct {
    pthread_t thread;
    bool used, done, reported;
    int argc;
    char *argv[MAX_ARGS];
    Answer ans;
} Job;

static Job jobs[MAX_JOBS];
static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jobs_cond = PTHREAD_COND_INITIALIZER;

static void *job_main(void *opaque)
{
    Job *j = opaque;
    Answer ans;

    ans_begin(&ans, j->argv[0]);
    ans_int(&ans, "job", j - jobs + 1);
    run_command(&ans, j->argc, j->argv);
    ans_end(&ans);
    pthread_mutex_lock(&jobs_lock);
    j->ans = ans;
    j->done = true;
    pthread_cond_broadcast(&jobs_cond);
    pthread_mutex_unlock(&jobs_lock);
    return NULL;
}

/* start CMD ARGS...: runs a disk, stall or touch command in a thread */
static void cmd_start(Answer *a, int argc, char **argv)
{
    Job *j = NULL;

    if (argc < 2) {
        ans_fail(a, "usage: start COMMAND ARGS...");
        return;
    }
    /* refuse unknown commands now rather than in the job's result */
    if (strcmp(argv[1], "write") && strcmp(argv[1], "verify") &&
        strcmp(argv[1], "io-latency") && strcmp(argv[1], "stall") &&
        strcmp(argv[1], "touch")) {
        ans_fail(a, "cannot start '%s' in the background", argv[1]);
        return;
    }
    pthread_mutex_lock(&jobs_lock);
    for (int i = 0; i < MAX_JOBS; i++) {
        /* a slot is reused once its result was read */
        if (!jobs[i].used || jobs[i].reported) {
            j = &jobs[i];
            break;
        }
    }
    if (!j) {
        pthread_mutex_unlock(&jobs_lock);
        ans_fail(a, "%d jobs whose results were not read", MAX_JOBS);
        return;
    }
    for (int i = 0; i < j->argc; i++) {
        free(j->argv[i]);
    }
    memset(j, 0, sizeof(*j));
    j->used = true;
    j->argc = argc - 1;
    for (int i = 1; i < argc; i++) {
        j->argv[i - 1] = strdup(argv[i]);
    }
    if (pthread_create(&j->thread, NULL, job_main, j)) {
        j->used = false;
        pthread_mutex_unlock(&jobs_lock);
        ans_fail(a, "pthread_create failed");
        return;
    }
    pthread_detach(j->thread);
    pthread_mutex_unlock(&jobs_lock);
    ans_int(a, "job", j - jobs + 1);
}

/*
 * wait N: blocks until job N ends and answers with the job's own line (its
 * "cmd" is the job's command, plus "job":N); the job's slot is then free.
 * poll N answers at once {"cmd":"poll","job":N,"running":BOOL}: it never
 * takes the result, so a test can poll, then wait.
 */
static bool cmd_wait(Answer *a, int argc, char **argv, bool block)
{
    char *end;
    long n;
    Job *j;
    bool done;

    if (argc != 2) {
        ans_fail(a, "usage: %s JOB", argv[0]);
        return false;
    }
    n = strtol(argv[1], &end, 10);
    if (*end || n < 1 || n > MAX_JOBS || !jobs[n - 1].used ||
        jobs[n - 1].reported) {
        ans_fail(a, "no job '%s'", argv[1]);
        return false;
    }
    j = &jobs[n - 1];
    pthread_mutex_lock(&jobs_lock);
    while (block && !j->done) {
        pthread_cond_wait(&jobs_cond, &jobs_lock);
    }
    done = j->done;
    if (block) {
        *a = j->ans;
        j->reported = true;
    } else {
        ans_int(a, "job", n);
        ans_raw(a, ",\"running\":%s", done ? "false" : "true");
    }
    pthread_mutex_unlock(&jobs_lock);
    return block;
}

/* ---- the port ------------------------------------------------------------ */

static int port_out = 1;

static void send_answer(Answer *a)
{
    char line[sizeof(a->buf) + 8];
    int n = snprintf(line, sizeof(line), "GW: %.*s\n", (int)a->len, a->buf);
    const char *p = line;

    /* one write() per line where possible: fewer chances to interleave */
    while (n > 0) {
        ssize_t w = write(port_out, p, (size_t)n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return;
        }
        p += w;
        n -= (int)w;
    }
}

static void handle_line(char *line)
{
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    Answer a;

    for (char *tok = strtok(line, " \t\r"); tok; tok = strtok(NULL, " \t\r")) {
        if (argc == MAX_ARGS) {
            ans_begin(&a, argv[0]);
            ans_fail(&a, "too many arguments");
            ans_end(&a);
            send_answer(&a);
            return;
        }
        argv[argc++] = tok;
    }
    if (argc == 0) {
        return;     /* empty lines are the host's way to resynchronize */
    }
    ans_begin(&a, argv[0]);
    if (!strcmp(argv[0], "ping")) {
        /* the token lets the host tell this pong from earlier ones */
        ans_str(&a, "pong", argc > 1 ? argv[1] : "");
    } else if (!strcmp(argv[0], "info")) {
        cmd_info(&a);
    } else if (!strcmp(argv[0], "start")) {
        cmd_start(&a, argc, argv);
    } else if (!strcmp(argv[0], "wait") || !strcmp(argv[0], "poll")) {
        if (cmd_wait(&a, argc, argv, argv[0][0] == 'w')) {
            send_answer(&a);    /* the job's own, already complete, line */
            return;
        }
    } else if (!strcmp(argv[0], "poweroff")) {
        ans_end(&a);
        send_answer(&a);
        sync();
        /* let the UART drain the answer before the machine goes away */
        tcdrain(port_out);
        reboot(RB_POWER_OFF);
        ans_begin(&a, "poweroff");
        ans_fail(&a, "reboot: %s", strerror(errno));
    } else if (!run_command(&a, argc, argv)) {
        ans_fail(&a, "unknown command");
    }
    ans_end(&a);
    send_answer(&a);
}

int main(int argc, char **argv)
{
    char buf[LINE_MAX_GW];
    size_t len = 0;
    bool overlong = false;
    int in = 0;

    if (argc > 1) {
        /* a port of its own: no kernel message ever lands on it */
        in = open(argv[1], O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (in < 0) {
            fprintf(stderr, "guestwork: open %s: %s\n", argv[1],
                    strerror(errno));
            return 1;
        }
        port_out = in;
    } else {
        /* sharing the console: keep the kernel quiet from now on */
        int fd = open("/proc/sys/kernel/printk", O_WRONLY);
        if (fd >= 0) {
            if (write(fd, "1", 1) < 0) {
                /* not fatal: the marker still tells answers apart */
            }
            close(fd);
        }
    }
    if (isatty(in)) {
        /* raw: no echo of commands, no CR/LF translation, 8 bits */
        struct termios t;
        if (tcgetattr(in, &t) == 0) {
            cfmakeraw(&t);
            t.c_cc[VMIN] = 1;
            t.c_cc[VTIME] = 0;
            cfsetspeed(&t, B115200);
            tcsetattr(in, TCSANOW, &t);
        }
    }
    setvbuf(stdout, NULL, _IONBF, 0);

    for (;;) {
        char c;
        ssize_t n = read(in, &c, 1);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            /* a port without a peer can report EOF or EIO: wait, retry */
            sleep(1);
            continue;
        }
        if (c != '\n' && c != '\r') {
            if (len < sizeof(buf) - 1) {
                buf[len++] = c;
            } else {
                overlong = true;
            }
            continue;
        }
        buf[len] = 0;
        if (overlong) {
            Answer a;
            ans_begin(&a, "?");
            ans_fail(&a, "line longer than %d bytes", LINE_MAX_GW - 1);
            ans_end(&a);
            send_answer(&a);
        } else {
            handle_line(buf);
        }
        len = 0;
        overlong = false;
    }
}
