/*
 * stack-launch: starts one call's process under its limits and makes sure
 * that nothing it starts outlives it.
 *
 *   stack-launch [-u UID -g GID] [-r NAME=VALUE]... [-p] [-n] [-c DIR] [-s FD] -- PROG ARG...
 *
 *   -u/-g   run PROG as this uid/gid, with no supplementary groups (root only)
 *   -r      set a resource limit (soft = hard): cpu, as, data, nproc, nofile,
 *           fsize, stack, core; VALUE in the limit's unit (seconds, bytes, count)
 *   -p      run PROG in a new pid namespace (as root directly, otherwise
 *           inside a new user namespace); when PROG exits, every process left
 *           in the namespace is killed.  Falls back to a process group when
 *           namespaces are not available (reported as "pidns": false).
 *   -n      set no_new_privs (no setuid binaries, no file capabilities)
 *   -c      working directory of PROG
 *   -s      status fd: first a line {"reaper": PID} (the pid, in the server's
 *           namespace, whose descendants are the call), then at the end one
 *           JSON line of status and usage
 *
 * Process tree:  server -> launcher (this, new session) -> reaper (pid 1 of the
 * new pid namespace) -> PROG.  The reaper reaps orphans, and when PROG exits
 * (or the launcher gets SIGTERM) kills everything left, reaps it, and reports
 * the CPU time and peak memory of the whole tree.  Every process here has
 * PR_SET_PDEATHSIG = SIGKILL, so the tree dies with the server.
 *
 * The launcher is tiny on purpose: it is exec'd once per call, and what it
 * costs is added to every call's latency.
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

struct limit {
    int resource;
    rlim_t value;
};

static volatile sig_atomic_t term_requested = 0;
static pid_t reaper_pid = -1;

static void on_term(int sig) {
    (void)sig;
    term_requested = 1;
}

static void forward_term(int sig) {
    (void)sig;
    if (reaper_pid > 0) kill(reaper_pid, SIGTERM);
}

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

static void kill_all(int in_pidns, pid_t child) {
    if (in_pidns) {
        kill(-1, SIGKILL);
    } else {
        kill(-child, SIGKILL);
        kill_children();
    }
}

static double seconds(struct timeval tv) { return tv.tv_sec + tv.tv_usec / 1e6; }

int main(int argc, char **argv) {
    struct limit limits[MAX_LIMITS];
    int nlimits = 0;
    long uid = -1, gid = -1;
    int want_pidns = 0, no_new_privs = 0, status_fd = -1;
    const char *cwd = NULL;
    int opt;

    while ((opt = getopt(argc, argv, "+u:g:r:pnc:s:")) != -1) {
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
        case 'p': want_pidns = 1; break;
        case 'n': no_new_privs = 1; break;
        case 'c': cwd = optarg; break;
        case 's': status_fd = atoi(optarg); break;
        default: return 125;
        }
    }
    if (optind >= argc) { dprintf(2, "stack-launch: no program\n"); return 125; }
    char **prog = argv + optind;

    /* Only 0-3 and the status fd go further; fd 3 is the control channel. */
    int keep = status_fd > 3 ? status_fd : 3;
    syscall(SYS_close_range, (unsigned)keep + 1, ~0U, 0);
    if (status_fd >= 0) fcntl(status_fd, F_SETFD, FD_CLOEXEC);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) _exit(125); /* the server died before we got here */

    int in_pidns = want_pidns ? enter_pidns() : 0;

    /* exec errors of PROG come back on this pipe (closed by a good exec). */
    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) != 0) die("pipe");

    pid_t reaper = in_pidns ? fork() : 0;
    if (reaper < 0) die("fork");
    if (reaper > 0) {
        /* The launcher: say where the call's tree is, wait for the reaper,
         * forward SIGTERM to it. */
        close(errpipe[0]);
        close(errpipe[1]);
        if (status_fd >= 0) {
            dprintf(status_fd, "{\"reaper\":%d}\n", (int)reaper);
            close(status_fd);
        }
        reaper_pid = reaper;
        struct sigaction sa = {0};
        sa.sa_handler = forward_term;
        sigaction(SIGTERM, &sa, NULL);
        int st;
        while (waitpid(reaper, &st, 0) < 0 && errno == EINTR) {}
        _exit(0);
    }

    /* The reaper: pid 1 of the namespace, or the launcher itself without one. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (!in_pidns) prctl(PR_SET_CHILD_SUBREAPER, 1);
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);

    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        close(errpipe[0]);
        signal(SIGTERM, SIG_DFL);
        if (!in_pidns) setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (int i = 0; i < nlimits; i++) {
            struct rlimit rl = {limits[i].value, limits[i].value};
            /* CPU: SIGXCPU at the limit (a clear reason), SIGKILL a second later. */
            if (limits[i].resource == RLIMIT_CPU) rl.rlim_max = rl.rlim_cur + 1;
            if (setrlimit(limits[i].resource, &rl) != 0) goto fail;
        }
        if (gid >= 0 && (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0)) goto fail;
        if (uid >= 0 && setresuid(uid, uid, uid) != 0) goto fail;
        if (no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) goto fail;
        if (cwd && chdir(cwd) != 0) goto fail;
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execvp(prog[0], prog);
    fail:;
        int err = errno;
        ssize_t ignored = write(errpipe[1], &err, sizeof err);
        (void)ignored;
        _exit(127);
    }
    close(errpipe[1]);
    int exec_errno = 0;
    while (read(errpipe[0], &exec_errno, sizeof exec_errno) < 0 && errno == EINTR) {}
    close(errpipe[0]);

    int child_status = 0, child_done = 0, killed = 0;
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, 0);
        if (pid < 0) {
            if (errno == EINTR) {
                if (term_requested && !killed) {
                    killed = 1;
                    kill_all(in_pidns, child);
                }
                continue;
            }
            break; /* ECHILD: everything is reaped */
        }
        if (pid == child) {
            child_status = st;
            child_done = 1;
        }
        /* The call is over: nothing it started may outlive it. */
        if (child_done || killed) kill_all(in_pidns, child);
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
