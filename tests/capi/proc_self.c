/* See proc_self.h. */
#include "proc_self.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>

int proc_open_fds(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

long proc_status_value(const char *key) {
    long v = -1;
    char line[256];
    const size_t k = strlen(key);
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, k) == 0 && line[k] == ':' && sscanf(line + k + 1, "%ld", &v) == 1) break;
    fclose(f);
    return v;
}
