/*
 * The cheapest shims that can stand between an engine and runc, as floors for bench.py's rows
 * (issue 18): what any runtime wrapper must cost, whatever it does, measured in the same run.
 *
 * Built as is: every call execs runc (argv passed through). That is all a passthrough call of
 * dso-runc does that it cannot avoid: one more exec.
 * Built with -DWAIT_FOR_CREATE: a `create` or `run` is spawned, waited for and its status
 * returned, the way a create with secrets must keep a process alive across runc's create (the
 * secrets are written into the container after runc made it); other calls exec runc.
 */
#include <errno.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#ifndef RUNC
#define RUNC "/usr/bin/runc"
#endif

int main(int argc, char **argv) {
    argv[0] = RUNC;
#ifdef WAIT_FOR_CREATE
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "create") == 0 || strcmp(argv[i], "run") == 0) {
            /* posix_spawn, as Rust's Command spawns runc from dso: a vfork, no page tables
             * copied. */
            pid_t pid;
            if (posix_spawn(&pid, RUNC, NULL, NULL, argv, environ) != 0)
                return 127;
            int status;
            while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                    return 127;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
    }
#else
    (void)argc;
#endif
    execv(RUNC, argv);
    return 127;
}
