/* What /proc/self says about the test process: the tests that check that nothing is left over (file
 * descriptors, threads, resident memory) read it through these. Linux only. */
#ifndef PANGU_TEST_PROC_SELF_H
#define PANGU_TEST_PROC_SELF_H

/* Open file descriptors (entries of /proc/self/fd), or -1. */
int proc_open_fds(void);
/* The number after "KEY:" in /proc/self/status (e.g. "Threads", "RssAnon" in kB), or -1. */
long proc_status_value(const char *key);

#endif
