/*
 * stack-launch: starts one call's process under its limits and makes sure
 * that nothing it starts outlives it.
 *
 *   stack-launch [-u UID -g GID] [-r NAME=VALUE]... [-G FILE]... [-p] [-n] [-F | -f FD]
 *                [-c DIR] [-s FD] -- PROG ARG...
 *
 *   -u/-g   run PROG as this uid/gid, with no supplementary groups (root only)
 *   -r      set a resource limit (soft = hard): cpu, as, data, nproc, nofile,
 *           fsize, stack, core; VALUE in the limit's unit (seconds, bytes, count)
 *   -G      a cgroup.procs file: the launcher writes its own pid into it
 *           before anything else (still root), so that the reaper, PROG and
 *           everything they start are in that cgroup from their first
 *           instruction (one per cgroup v1 controller, or one for v2)
 *   -p      run PROG in a new pid namespace (as root directly, otherwise
 *           inside a new user namespace); when PROG exits, every process left
 *           in the namespace is killed.  Falls back to a process group when
 *           namespaces are not available (reported as "pidns": false).
 *   -n      set no_new_privs (no setuid binaries, no file capabilities)
 *   -F      install the call's seccomp filter (see below) in PROG, last thing
 *           before exec (needs -n or root)
 *   -f      give PROG the seccomp filter, compiled, to read from fd FD
 *           (for bubblewrap's --seccomp FD, which installs it in the program
 *           it runs: bubblewrap itself needs the namespace calls it denies)
 *   -c      working directory of PROG
 *   -s      status fd: first a line {"reaper": PID} (the pid, in the server's
 *           namespace, whose descendants are the call), then at the end one
 *           JSON line of status and usage
 *
 * With -p:     server -> launcher -> reaper (pid 1 of the new pid namespace)
 *              -> PROG.  kill(-1) from pid 1 reaches the whole namespace, at
 *              once (a fork under way fails), and when pid 1 dies the kernel
 *              kills the rest.
 * Without -p:  server -> launcher (the reaper, a child subreaper) -> PROG in a
 *              process group of its own; its group is killed, then the
 *              reaper's children round after round.  Enough when PROG keeps
 *              the call in a pid namespace of its own (bubblewrap): killing
 *              PROG ends that namespace.
 *
 * The reaper reaps orphans, and when PROG exits (or the launcher gets
 * SIGTERM) kills everything left, reaps it, and reports the CPU time and peak
 * memory of the whole tree.  Every process here has PR_SET_PDEATHSIG =
 * SIGKILL, so the tree dies with the server.
 *
 * The launcher is tiny on purpose, and built static when it can be (see
 * launcher.py): it is exec'd once per call, and what it costs is added to
 * every call's latency.
 *
 *   stack-launch -S
 *
 * writes the compiled filter to stdout (nothing on an architecture it does
 * not know), for the engine to check and for tests.
 *
 *   stack-launch -X
 *
 * is a warm process of a language without a warm prelude: PROG of a launcher
 * (and of bubblewrap), started ahead of its call with the sandbox already
 * set up.  It says {"type":"ready"} on fd 3, reads the call message from
 * stdin (8 hex digits of length, then NUL-terminated fields: the argument
 * count, the arguments, then NAME=VALUE environment entries) and execs it,
 * reading no byte past the message: the rest of stdin is the call's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_LIMITS 16
#define MAX_CGROUPS 4

struct limit {
    int resource;
    rlim_t value;
};

static void die(const char *what) {
    dprintf(2, "stack-launch: %s: %s\n", what, strerror(errno));
    _exit(125);
}

static int resource_of(const char *name) {
    if (!strcmp(name, "cpu")) return RLIMIT_CPU;
    if (!strcmp(name, "as")) return RLIMIT_AS;
    if (!strcmp(name, "data")) return RLIMIT_DATA;
    if (!strcmp(name, "nproc")) return RLIMIT_NPROC;
    if (!strcmp(name, "nofile")) return RLIMIT_NOFILE;
    if (!strcmp(name, "fsize")) return RLIMIT_FSIZE;
    if (!strcmp(name, "stack")) return RLIMIT_STACK;
    if (!strcmp(name, "core")) return RLIMIT_CORE;
    return -1;
}

/* Move this process into each cgroup; a call must never run outside its own. */
static void enter_cgroups(const char *const *procs, int count) {
    char self[24];
    int len = snprintf(self, sizeof self, "%d", (int)getpid());
    for (int i = 0; i < count; i++) {
        int fd = open(procs[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, self, (size_t)len) != len) die(procs[i]);
        close(fd);
    }
}

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* Enter a new pid namespace for our children.  Returns 1 on success. */
static int enter_pidns(void) {
    if (geteuid() == 0) return unshare(CLONE_NEWPID) == 0;
    uid_t uid = geteuid();
    gid_t gid = getegid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWPID) != 0) return 0;
    char map[64];
    snprintf(map, sizeof map, "%u %u 1\n", (unsigned)uid, (unsigned)uid);
    if (write_file("/proc/self/uid_map", map) != 0) die("uid_map");
    if (write_file("/proc/self/setgroups", "deny\n") != 0) die("setgroups");
    snprintf(map, sizeof map, "%u %u 1\n", (unsigned)gid, (unsigned)gid);
    if (write_file("/proc/self/gid_map", map) != 0) die("gid_map");
    return 1;
}

/* Without a pid namespace we are a child subreaper: orphans are reparented to
 * us, so killing our children round after round reaches every descendant. */
static void kill_children(void) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return;
    buf[n] = '\0';
    for (char *p = buf; *p;) {
        char *end;
        long pid = strtol(p, &end, 10);
        if (end == p) break;
        if (pid > 0) kill((pid_t)pid, SIGKILL);
        p = end;
    }
}

/* The seccomp filter of a call: a deny-list of system calls that untrusted
 * code never needs and that widen the kernel's attack surface or reach
 * outside the call (the list is documented in docs/SECURITY.md).  Denied calls
 * fail with EPERM (clone3 with ENOSYS: its flags are behind a pointer the
 * filter cannot read, and libc then falls back to clone, whose flags it can);
 * a call of another architecture's ABI (x32, i386 on x86_64) kills the
 * process.  Written by hand in classic BPF, with the few constants of
 * linux/seccomp.h and linux/filter.h defined here: musl ships no kernel
 * headers. */
struct bpf_insn {
    unsigned short code;
    unsigned char jt, jf;
    unsigned int k;
};
struct bpf_prog {
    unsigned short len;
    struct bpf_insn *filter;
};
#define BPF_LD_W_ABS 0x20 /* BPF_LD | BPF_W | BPF_ABS */
#define BPF_JEQ_K 0x15    /* BPF_JMP | BPF_JEQ | BPF_K */
#define BPF_JGE_K 0x35    /* BPF_JMP | BPF_JGE | BPF_K */
#define BPF_JSET_K 0x45   /* BPF_JMP | BPF_JSET | BPF_K */
#define BPF_RET_K 0x06    /* BPF_RET | BPF_K */
#define RET_ALLOW 0x7fff0000U
#define RET_KILL_PROCESS 0x80000000U
#define RET_ERRNO(e) (0x00050000U | ((e) & 0xffff))
#define MODE_FILTER 2 /* SECCOMP_MODE_FILTER */
/* struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6] */
#define OFF_NR 0
#define OFF_ARCH 4
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define OFF_ARG_LO(n) (16 + 8 * (n))
#else
#define OFF_ARG_LO(n) (16 + 8 * (n) + 4)
#endif

#if defined(__x86_64__)
#define FILTER_ARCH 0xc000003eU /* AUDIT_ARCH_X86_64 */
#elif defined(__aarch64__)
#define FILTER_ARCH 0xc00000b7U /* AUDIT_ARCH_AARCH64 */
#endif

/* Room for the filter: at most two instructions per denied system call,
 * plus the fixed parts (checked at compile time below). */
#define MAX_FILTER 192
#define MAX_FILTER_ASM MAX_FILTER

#ifdef FILTER_ARCH
/* System calls newer than some C libraries' headers: one number on every
 * architecture here (the common table from 424 on). */
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif
#ifndef SYS_fspick
#define SYS_fspick 433
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_quotactl_fd
#define SYS_quotactl_fd 443
#endif
#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#endif
#ifndef SYS_io_uring_enter
#define SYS_io_uring_enter 426
#endif
#ifndef SYS_io_uring_register
#define SYS_io_uring_register 427
#endif

static const long denied[] = {
    /* other processes' memory and state */
    SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_kcmp, SYS_pidfd_getfd,
    /* the kernel keyring, eBPF, perf, userfaultfd (kernel exploit staples) */
    SYS_keyctl, SYS_add_key, SYS_request_key, SYS_bpf, SYS_perf_event_open, SYS_userfaultfd,
    /* mounts and namespaces */
    SYS_mount, SYS_umount2, SYS_pivot_root, SYS_setns, SYS_open_tree, SYS_move_mount,
    SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_fspick, SYS_mount_setattr,
    /* the machine */
    SYS_swapon, SYS_swapoff, SYS_reboot, SYS_kexec_load,
#ifdef SYS_kexec_file_load
    SYS_kexec_file_load,
#endif
    SYS_init_module, SYS_finit_module, SYS_delete_module, SYS_acct, SYS_quotactl,
    SYS_quotactl_fd, SYS_syslog, SYS_settimeofday, SYS_clock_settime, SYS_clock_adjtime,
    SYS_adjtimex, SYS_sethostname, SYS_setdomainname,
#ifdef SYS_iopl
    SYS_iopl, SYS_ioperm,
#endif
#ifdef SYS_lookup_dcookie
    SYS_lookup_dcookie,
#endif
#ifdef SYS_uselib
    SYS_uselib,
#endif
#ifdef SYS__sysctl
    SYS__sysctl,
#endif
    /* files by handle (bypass path checks), fanotify, io_uring */
    SYS_open_by_handle_at, SYS_name_to_handle_at, SYS_fanotify_init, SYS_io_uring_setup,
    SYS_io_uring_enter, SYS_io_uring_register,
};

/* Namespace flags of clone and unshare (CLONE_NEWTIME, NEWNS, NEWCGROUP,
 * NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET). */
#define CLONE_NAMESPACES 0x7e020080U
/* Allowed personalities: PER_LINUX, PER_LINUX32, UNAME26 and both, and the
 * query (0xffffffff); others (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE...) undo
 * hardening. */
static const unsigned personalities[] = {0x0, 0x8, 0x20000, 0x20008, 0xffffffffU};
_Static_assert(24 + 2 * sizeof denied / sizeof denied[0] +
                   sizeof personalities / sizeof personalities[0] <= MAX_FILTER,
               "the seccomp filter outgrows MAX_FILTER");
#define TIOCSTI_ 0x5412 /* push characters into a terminal's input */

/* A tiny assembler: a jump names a label (resolved once the program is laid
 * out) or skips a literal number of instructions (0-255). */
enum { NEXT = 0, L_ALLOW = 1000, L_EPERM, L_ENOSYS, L_NS, L_PERS, L_IOCTL, L_END };
#define L_COUNT (L_END - L_ALLOW)
struct asm_state {
    struct bpf_insn *out;
    int n;
    int jt[MAX_FILTER_ASM], jf[MAX_FILTER_ASM]; /* label of each jump, or NEXT */
    int at[L_COUNT];                            /* where each label is */
};

static void emit(struct asm_state *a, unsigned short code, unsigned k, int jt, int jf) {
    a->out[a->n] = (struct bpf_insn){code, 0, 0, k};
    a->jt[a->n] = jt;
    a->jf[a->n] = jf;
    a->n++;
}

static void label(struct asm_state *a, int name) { a->at[name - L_ALLOW] = a->n; }

/* Fill `out` (room for MAX_FILTER) with the filter; returns its length.
 *
 * Laid out for cheap evaluation: the kernel runs the filter for every
 * system call of the call, and once per system call number when it is
 * installed (to cache the always-allowed ones: a long chain there costs
 * hundreds of microseconds per call).  So the denied numbers are sorted
 * and merged into ranges, and the chain stops at the first range above the
 * number: most system calls are allowed after a few comparisons. */
static int build_filter(struct bpf_insn *out) {
    struct asm_state a = {.out = out};
    emit(&a, BPF_LD_W_ABS, OFF_ARCH, NEXT, NEXT);
    emit(&a, BPF_JEQ_K, FILTER_ARCH, 1, NEXT);
    emit(&a, BPF_RET_K, RET_KILL_PROCESS, NEXT, NEXT);
    emit(&a, BPF_LD_W_ABS, OFF_NR, NEXT, NEXT);
#if defined(__x86_64__)
    emit(&a, BPF_JGE_K, 0x40000000U, NEXT, 1); /* the x32 ABI */
    emit(&a, BPF_RET_K, RET_KILL_PROCESS, NEXT, NEXT);
#endif
    /* The system calls decided by their arguments, and clone3. */
    emit(&a, BPF_JEQ_K, SYS_clone3, L_ENOSYS, NEXT);
    emit(&a, BPF_JEQ_K, SYS_clone, L_NS, NEXT);
    emit(&a, BPF_JEQ_K, SYS_unshare, L_NS, NEXT);
    emit(&a, BPF_JEQ_K, SYS_personality, L_PERS, NEXT);
    emit(&a, BPF_JEQ_K, SYS_ioctl, L_IOCTL, NEXT);
    /* The deny-list, sorted, as ranges [lo, hi]. */
    enum { N = sizeof denied / sizeof denied[0] };
    unsigned sorted[N];
    for (int i = 0; i < N; i++) {
        unsigned v = (unsigned)denied[i];
        int j = i;
        for (; j > 0 && sorted[j - 1] > v; j--) sorted[j] = sorted[j - 1];
        sorted[j] = v;
    }
    for (int i = 0; i < N;) {
        unsigned lo = sorted[i], hi = lo;
        while (++i < N && sorted[i] <= hi + 1) hi = sorted[i];
        emit(&a, BPF_JGE_K, lo, NEXT, L_ALLOW); /* below this range: below every later one */
        emit(&a, BPF_JGE_K, hi + 1, NEXT, L_EPERM);
    }
    emit(&a, BPF_RET_K, RET_ALLOW, NEXT, NEXT); /* above every range */
    /* The blocks jumped to: forward only, so the shared returns come last. */
    label(&a, L_ENOSYS);
    /* clone3: its flags are behind a pointer; "not implemented" makes libc use clone. */
    emit(&a, BPF_RET_K, RET_ERRNO(ENOSYS), NEXT, NEXT);
    /* clone (flags: the first argument on x86_64 and arm64) and unshare:
     * no new namespace. */
    label(&a, L_NS);
    emit(&a, BPF_LD_W_ABS, OFF_ARG_LO(0), NEXT, NEXT);
    emit(&a, BPF_JSET_K, CLONE_NAMESPACES, L_EPERM, L_ALLOW);
    /* personality: only the harmless ones. */
    label(&a, L_PERS);
    emit(&a, BPF_LD_W_ABS, OFF_ARG_LO(0), NEXT, NEXT);
    int npers = (int)(sizeof personalities / sizeof personalities[0]);
    for (int i = 0; i < npers; i++)
        emit(&a, BPF_JEQ_K, personalities[i], L_ALLOW, i == npers - 1 ? L_EPERM : NEXT);
    /* ioctl(fd, TIOCSTI): typing into a terminal the call may share. */
    label(&a, L_IOCTL);
    emit(&a, BPF_LD_W_ABS, OFF_ARG_LO(1), NEXT, NEXT);
    emit(&a, BPF_JEQ_K, TIOCSTI_, L_EPERM, L_ALLOW);
    label(&a, L_ALLOW);
    emit(&a, BPF_RET_K, RET_ALLOW, NEXT, NEXT);
    label(&a, L_EPERM);
    emit(&a, BPF_RET_K, RET_ERRNO(EPERM), NEXT, NEXT);
    /* Resolve: a label becomes a forward offset (0-255: checked). */
    for (int i = 0; i < a.n; i++) {
        int targets[2] = {a.jt[i], a.jf[i]};
        unsigned char *fields[2] = {&out[i].jt, &out[i].jf};
        for (int t = 0; t < 2; t++) {
            int target = targets[t];
            int offset = target >= L_ALLOW ? a.at[target - L_ALLOW] - (i + 1) : target;
            if (offset < 0 || offset > 255) {
                dprintf(2, "stack-launch: seccomp filter: bad jump\n");
                _exit(125);
            }
            *fields[t] = (unsigned char)offset;
        }
    }
    return a.n;
}
#else
static int build_filter(struct bpf_insn *out) {
    (void)out;
    return 0; /* an architecture this filter does not know: none */
}
#endif

static struct bpf_insn filter[MAX_FILTER];
static int filter_len;

/* How PROG is started. */
struct start {
    char **prog;
    const struct limit *limits;
    int nlimits;
    long uid, gid;
    int no_new_privs;
    const char *cwd;
    int own_group; /* in a process group of its own (no pid namespace) */
    int seccomp;   /* install the filter before exec */
    int filter_fd; /* or give it to PROG on this fd (a pipe: filter_pipe) */
    int filter_pipe;
};

/* Why PROG could not be started (0: it was), set by the child. */
static volatile int start_errno;

/* Start PROG under its limits and uid.  vfork, not fork: the parent sleeps
 * until the child has exec'd (or failed), and nothing of our memory is
 * copied.  The child shares our memory meanwhile, so it only makes system
 * calls (no handler can run in it either: every signal we catch is blocked
 * and taken by sigwaitinfo), and it reports a failure in start_errno. */
static pid_t start_prog(const struct start *s) {
    pid_t parent = getpid();
    start_errno = 0;
    pid_t pid = vfork();
    if (pid != 0) return pid;
    if (s->own_group) setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127); /* the reaper died before PDEATHSIG was set */
    for (int i = 0; i < s->nlimits; i++) {
        struct rlimit rl = {s->limits[i].value, s->limits[i].value};
        /* CPU: SIGXCPU at the limit (a clear reason), SIGKILL a second later. */
        if (s->limits[i].resource == RLIMIT_CPU) rl.rlim_max = rl.rlim_cur + 1;
        if (setrlimit(s->limits[i].resource, &rl) != 0) goto fail;
    }
    if (s->gid >= 0 && (setgroups(0, NULL) != 0 || setresgid(s->gid, s->gid, s->gid) != 0)) goto fail;
    if (s->uid >= 0 && setresuid(s->uid, s->uid, s->uid) != 0) goto fail;
    if (s->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) goto fail;
    if (s->cwd && chdir(s->cwd) != 0) goto fail;
    if (s->filter_fd >= 0) {
        if (s->filter_pipe == s->filter_fd) {
            if (fcntl(s->filter_fd, F_SETFD, 0) != 0) goto fail;
        } else if (dup2(s->filter_pipe, s->filter_fd) < 0) {
            goto fail;
        }
    }
    if (s->seccomp && filter_len > 0) {
        struct bpf_prog prog = {(unsigned short)filter_len, filter};
        if (prctl(PR_SET_SECCOMP, MODE_FILTER, &prog, 0, 0) != 0) goto fail;
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execvp(s->prog[0], s->prog);
fail:
    start_errno = errno;
    _exit(127);
}

static int read_exactly(int fd, char *buf, size_t count) {
    size_t got = 0;
    while (got < count) {
        ssize_t n = read(fd, buf + got, count - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        got += (size_t)n;
    }
    return 0;
}

#define MAX_MESSAGE (16 << 20)

/* -X: wait for the call on stdin, then become it. */
static int exec_from_stdin(void) {
    static const char ready[] = "{\"type\":\"ready\"}\n";
    ssize_t ignored = write(3, ready, sizeof ready - 1); /* no fd 3: nobody asks */
    (void)ignored;
    char head[9] = {0}, *end;
    if (read_exactly(0, head, 8) != 0) _exit(0); /* retired before any call */
    unsigned long size = strtoul(head, &end, 16);
    if (end != head + 8 || size == 0 || size > MAX_MESSAGE) {
        dprintf(2, "stack-launch: bad call message\n");
        return 125;
    }
    char *buf = malloc(size + 1);
    if (!buf) die("malloc");
    if (read_exactly(0, buf, size) != 0) _exit(0);
    if (buf[size - 1] != '\0') {
        dprintf(2, "stack-launch: bad call message\n");
        return 125;
    }
    size_t fields = 0;
    for (size_t i = 0; i < size; i++) fields += buf[i] == '\0';
    char **field = calloc(fields + 2, sizeof *field);
    if (!field) die("calloc");
    char *p = buf;
    for (size_t i = 0; i < fields; i++, p += strlen(p) + 1) field[i] = p;
    long argc = strtol(field[0], &end, 10);
    if (*end || argc < 1 || (size_t)argc >= fields) {
        dprintf(2, "stack-launch: bad call message\n");
        return 125;
    }
    /* argv is field[1..argc]; envp, the rest: both NULL-terminated. */
    char **argv = field + 1, **envp = field + 1 + argc;
    memmove(envp + 1, envp, (fields - 1 - (size_t)argc) * sizeof *field);
    envp[0] = NULL;
    envp++;
    field[fields + 1] = NULL;
    execve(argv[0], argv, envp);
    dprintf(2, "stack-launch: cannot run %s: %s\n", argv[0], strerror(errno));
    return 127;
}

static double seconds(struct timeval tv) { return tv.tv_sec + tv.tv_usec / 1e6; }

int main(int argc, char **argv) {
    struct limit limits[MAX_LIMITS];
    int nlimits = 0;
    long uid = -1, gid = -1;
    int want_pidns = 0, no_new_privs = 0, status_fd = -1, seccomp = 0, filter_fd = -1;
    const char *cwd = NULL;
    const char *cgroups[MAX_CGROUPS];
    int ncgroups = 0;
    int opt;

    if (argc == 2 && !strcmp(argv[1], "-X")) return exec_from_stdin();
    filter_len = build_filter(filter);
    if (argc == 2 && !strcmp(argv[1], "-S")) {
        size_t size = (size_t)filter_len * sizeof filter[0];
        return write(1, filter, size) == (ssize_t)size ? 0 : 1;
    }

    while ((opt = getopt(argc, argv, "+u:g:r:G:pnFf:c:s:")) != -1) {
        switch (opt) {
        case 'u': uid = strtol(optarg, NULL, 10); break;
        case 'g': gid = strtol(optarg, NULL, 10); break;
        case 'r': {
            char *eq = strchr(optarg, '=');
            if (!eq || nlimits == MAX_LIMITS) { dprintf(2, "stack-launch: bad -r %s\n", optarg); return 125; }
            *eq = '\0';
            int res = resource_of(optarg);
            if (res < 0) { dprintf(2, "stack-launch: unknown limit %s\n", optarg); return 125; }
            limits[nlimits].resource = res;
            limits[nlimits].value = (rlim_t)strtoull(eq + 1, NULL, 10);
            nlimits++;
            break;
        }
        case 'G':
            if (ncgroups == MAX_CGROUPS) { dprintf(2, "stack-launch: too many -G\n"); return 125; }
            cgroups[ncgroups++] = optarg;
            break;
        case 'p': want_pidns = 1; break;
        case 'n': no_new_privs = 1; break;
        case 'F': seccomp = 1; break;
        case 'f': filter_fd = atoi(optarg); break;
        case 'c': cwd = optarg; break;
        case 's': status_fd = atoi(optarg); break;
        default: return 125;
        }
    }
    if (optind >= argc) { dprintf(2, "stack-launch: no program\n"); return 125; }
    char **prog = argv + optind;

    /* Only 0-3 and the status fd go further; fd 3 is the control channel. */
    if (status_fd > 4) syscall(SYS_close_range, 4U, (unsigned)status_fd - 1, 0);
    int keep = status_fd > 3 ? status_fd : 3;
    syscall(SYS_close_range, (unsigned)keep + 1, ~0U, 0);
    if (status_fd >= 0) fcntl(status_fd, F_SETFD, FD_CLOEXEC);

    /* SIGTERM and SIGCHLD are only ever taken by sigwaitinfo: one that comes
     * before we wait is not lost, and no handler runs in a vfork child. */
    sigset_t waited;
    sigemptyset(&waited);
    sigaddset(&waited, SIGTERM);
    sigaddset(&waited, SIGCHLD);
    sigprocmask(SIG_BLOCK, &waited, NULL);
    signal(SIGCHLD, SIG_DFL); /* an inherited SIG_IGN would reap children for us */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) _exit(125); /* the server died before we got here */
    enter_cgroups(cgroups, ncgroups);

    int in_pidns = want_pidns ? enter_pidns() : 0;
    pid_t reaper = in_pidns ? fork() : 0;
    if (reaper < 0) die("fork");
    if (reaper > 0) {
        /* The launcher: say where the call's tree is, forward SIGTERM to the
         * reaper, wait for it. */
        if (status_fd >= 0) {
            dprintf(status_fd, "{\"reaper\":%d}\n", (int)reaper);
            close(status_fd);
        }
        for (;;) {
            int sig = sigwaitinfo(&waited, NULL);
            if (sig == SIGTERM) kill(reaper, SIGTERM);
            if (sig == SIGCHLD && waitpid(reaper, NULL, WNOHANG) == reaper) _exit(0);
        }
    }

    /* The reaper: pid 1 of the namespace, or the launcher itself without one. */
    if (in_pidns) prctl(PR_SET_PDEATHSIG, SIGKILL);
    else prctl(PR_SET_CHILD_SUBREAPER, 1);

    int filter_pipe = -1;
    if (filter_fd >= 0) {
        /* The whole filter fits in a pipe's buffer: written now, read by PROG. */
        int ends[2];
        size_t size = (size_t)filter_len * sizeof filter[0];
        if (filter_fd <= 3 || filter_fd == status_fd) { errno = EINVAL; die("-f"); }
        if (pipe2(ends, O_CLOEXEC) != 0) die("pipe");
        if (write(ends[1], filter, size) != (ssize_t)size) die("filter");
        close(ends[1]);
        filter_pipe = ends[0];
    }
    struct start start = {prog, limits, nlimits, uid, gid, no_new_privs, cwd, !in_pidns,
                          seccomp, filter_fd, filter_pipe};
    pid_t child = start_prog(&start);
    if (child < 0) die("vfork");
    if (filter_pipe >= 0) close(filter_pipe);
    int exec_errno = start_errno;
    if (!in_pidns && status_fd >= 0) dprintf(status_fd, "{\"reaper\":%d}\n", (int)getpid());

    /* Reap until no child is left.  Once the call is over (PROG exited, or
     * SIGTERM), kill whatever is left, again after each death. */
    int child_status = 0, child_done = 0, killed = 0;
    for (;;) {
        int st;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            if (pid == child) {
                child_status = st;
                child_done = 1;
            }
        }
        if (pid < 0) break; /* ECHILD: everything is reaped */
        if (child_done || killed) {
            /* The call is over: nothing it started may outlive it. */
            if (in_pidns) {
                kill(-1, SIGKILL);
            } else {
                kill(-child, SIGKILL);
                kill_children();
            }
        }
        if (sigwaitinfo(&waited, NULL) == SIGTERM) killed = 1;
    }
    if (status_fd >= 0) {
        struct rusage ru;
        getrusage(RUSAGE_CHILDREN, &ru);
        int code = -1, sig = 0;
        if (child_done && WIFEXITED(child_status)) code = WEXITSTATUS(child_status);
        if (child_done && WIFSIGNALED(child_status)) sig = WTERMSIG(child_status);
        char line[512];
        int n = snprintf(line, sizeof line,
                         "{\"exit\":%d,\"signal\":%d,\"utime\":%.6f,\"stime\":%.6f,"
                         "\"maxrss_kb\":%ld,\"killed\":%s,\"exec_errno\":%d,\"pidns\":%s}\n",
                         code, sig, seconds(ru.ru_utime), seconds(ru.ru_stime), ru.ru_maxrss,
                         killed ? "true" : "false", exec_errno, in_pidns ? "true" : "false");
        ssize_t ignored = write(status_fd, line, (size_t)n);
        (void)ignored;
    }
    _exit(0);
}
