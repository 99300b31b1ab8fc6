/* nsinspect-exec: a session's reaper, the one helper stage a pod can see.
 *
 * The enterer (agent/enter.py) joins the container, confines itself as the container and forks;
 * the child execs this from a sealed memfd (execveat), so what the pod can reach through
 * /proc/<reaper> is this small static program: its exe is the memfd (unwritable), its maps name no
 * file of the node's (no interpreter, no libraries: map_files of a forked Python named the node's
 * libc and ld.so), its memory holds this session's plan alone, its environment is empty.
 *
 * fds at exec: 0-2 the session's stdio, 3 the plan (a pipe the enterer writes, then closes), 4 the
 * status socket (SOCK_SEQPACKET to the agent). The plan: NUL-separated fields, "path", "tty" (0/1),
 * "error" (when the program could not be found: the message to report; path is then empty), the
 * exit code for that case, argc, the argv, envc, the environment.
 *
 * It becomes non-dumpable and a child subreaper, waits for the agent's {"go": true} (the agent
 * checks this process's confinement from the node's side first), starts the command (a new
 * session; for a terminal, its controlling tty), reports "started", forwards {"signal": N}, reaps
 * everything (what daemonizes comes back here), reports {"event": "exit", ...} when the command
 * ends, kills what is left, and exits once nothing is left; if the agent hangs up, it kills
 * everything first. Build: gcc -static -Os (hack/setup; the image's Dockerfile).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define PLAN_FD 3
#define STATUS_FD 4
#define PLAN_MAX (1 << 20)

static void report(const char *msg) {
    if (send(STATUS_FD, msg, strlen(msg), MSG_NOSIGNAL) < 0) { /* the agent is gone: nothing to tell */ }
}

static void json_escape(char *out, size_t size, const char *in) {
    size_t o = 0;
    for (; *in && o + 7 < size; in++) {
        unsigned char c = (unsigned char)*in;
        if (c == '"' || c == '\\') { out[o++] = '\\'; out[o++] = (char)c; }
        else if (c < 0x20) o += (size_t)snprintf(out + o, size - o, "\\u%04x", c);
        else out[o++] = (char)c;
    }
    out[o] = 0;
}

static char *plan, *plan_end, *cursor;

static char *field(void) {
    if (cursor >= plan_end) return NULL;
    char *start = cursor;
    cursor += strlen(cursor) + 1;
    return start;
}

static int read_plan(void) {
    size_t used = 0;
    plan = malloc(PLAN_MAX);
    if (!plan) return -1;
    for (;;) {
        ssize_t n = read(PLAN_FD, plan + used, PLAN_MAX - used);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) break;
        used += (size_t)n;
        if (used == PLAN_MAX) return -1;
    }
    close(PLAN_FD);
    plan_end = plan + used;
    cursor = plan;
    return 0;
}

/* Every child of ours (orphans that daemonized came back to us), and the command's group. */
static void kill_all(pid_t cmd, int cmd_alive) {
    if (cmd_alive) kill(-cmd, SIGKILL);
    for (int round = 0; round < 10; round++) {
        int found = 0;
        DIR *tasks = opendir("/proc/self/task");
        if (!tasks) return;
        struct dirent *t;
        while ((t = readdir(tasks))) {
            if (t->d_name[0] == '.') continue;
            char path[300], buf[4096];
            snprintf(path, sizeof path, "/proc/self/task/%s/children", t->d_name);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) continue;
            ssize_t n = read(fd, buf, sizeof buf - 1);
            close(fd);
            if (n <= 0) continue;
            buf[n] = 0;
            for (char *p = strtok(buf, " \n"); p; p = strtok(NULL, " \n")) {
                pid_t pid = (pid_t)atoi(p);
                if (pid > 0) { kill(-pid, SIGKILL); kill(pid, SIGKILL); found = 1; }
            }
        }
        closedir(tasks);
        if (!found) return;
    }
}

static pid_t start_command(const char *path, int tty, char **argv, char **envp, int *failed) {
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) { *failed = errno; return -1; }
    pid_t pid = fork();
    if (pid < 0) { *failed = errno; close(pipefd[0]); close(pipefd[1]); return -1; }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setsid();
        if (tty && ioctl(0, TIOCSCTTY, 0) == 0) { dup2(0, 1); dup2(0, 2); }
        execve(path, argv, envp);
        int err = errno;
        if (write(pipefd[1], &err, sizeof err) < 0) { /* the parent sees end of file: exec'd */ }
        _exit(126);
    }
    close(pipefd[1]);
    int err = 0;
    ssize_t n;
    do n = read(pipefd[0], &err, sizeof err); while (n < 0 && errno == EINTR);
    close(pipefd[0]);
    if (n == (ssize_t)sizeof err) { waitpid(pid, NULL, 0); *failed = err; return -1; }
    return pid;
}

static void release_stdio(void) {
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int fd = 0; fd < 3; fd++) {
        if (null >= 0) dup3(null, fd, 0);
        else close(fd);
    }
    if (null > 2) close(null);
}

int main(void) {
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    prctl(PR_SET_NAME, "nsinspect-exec", 0, 0, 0);
    if (read_plan() < 0) return 1;
    char *path = field(), *tty = field(), *error = field(), *error_code = field(), *count = field();
    if (!path || !tty || !error || !error_code || !count) return 1;
    int argc = atoi(count);
    char **argv = calloc((size_t)argc + 1, sizeof *argv);
    for (int i = 0; argv && i < argc; i++) if (!(argv[i] = field())) return 1;
    char *envcount = field();
    if (!argv || !envcount) return 1;
    int envc = atoi(envcount);
    char **envp = calloc((size_t)envc + 1, sizeof *envp);
    for (int i = 0; envp && i < envc; i++) if (!(envp[i] = field())) return 1;
    if (!envp) return 1;

    char msg[8192], text[4096];
    ssize_t n;
    do n = recv(STATUS_FD, msg, sizeof msg - 1, 0); while (n < 0 && errno == EINTR);
    if (n <= 0) return 1;  /* the agent hung up, or found us wrongly confined: nothing was started */
    msg[n] = 0;
    if (!strstr(msg, "\"go\": true") && !strstr(msg, "\"go\":true")) return 1;

    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);

    int failed = 0;
    pid_t cmd = path[0] ? start_command(path, tty[0] == '1', argv, envp, &failed) : -1;
    release_stdio();
    if (cmd < 0) {
        if (!path[0]) json_escape(text, sizeof text, error);
        else json_escape(text, sizeof text, strerror(failed));
        snprintf(msg, sizeof msg, "{\"event\": \"exec_failed\", \"message\": \"%s\"}", text);
        report(msg);
        snprintf(msg, sizeof msg, "{\"event\": \"exit\", \"code\": %d, \"signal\": 0}",
                 path[0] ? (failed == ENOENT ? 127 : 126) : atoi(error_code));
        report(msg);
        return 0;
    }
    report("{\"event\": \"started\"}");

    int done = 0, agent_gone = 0;
    for (;;) {
        int children = 1;
        for (;;) {
            int status;
            pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid < 0) { children = 0; break; }
            if (pid == 0) break;
            if (pid == cmd) {
                done = 1;
                int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
                int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
                snprintf(msg, sizeof msg, "{\"event\": \"exit\", \"code\": %d, \"signal\": %d}", code, sig);
                report(msg);
                kill_all(cmd, 0);  /* the session ends with its command */
            }
        }
        if (!children && (done || agent_gone)) {
            close(STATUS_FD);  /* the agent's sign that the session is over: before our exit */
            return 0;
        }
        struct pollfd fds[2] = {{.fd = sfd, .events = POLLIN}, {.fd = agent_gone ? -1 : STATUS_FD, .events = POLLIN}};
        int ready = poll(fds, 2, agent_gone || done ? 100 : -1);
        if (ready < 0 && errno != EINTR) return 1;
        if (fds[0].revents) {
            struct signalfd_siginfo info;
            while (read(sfd, &info, sizeof info) > 0) { }
        }
        if (fds[1].revents) {
            do n = recv(STATUS_FD, msg, sizeof msg - 1, MSG_DONTWAIT); while (n < 0 && errno == EINTR);
            if (n <= 0 && !(n < 0 && errno == EAGAIN)) {  /* the agent hung up: end everything now */
                agent_gone = 1;
                kill_all(cmd, !done);
            } else if (n > 0 && !done) {
                msg[n] = 0;
                char *s = strstr(msg, "\"signal\":");
                if (s) kill(cmd, atoi(s + 9));
            }
        }
    }
}
