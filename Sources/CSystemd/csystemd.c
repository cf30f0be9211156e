#include "csystemd.h"
#include <systemd/sd-daemon.h>

int ctd_sd_notify(const char *state) { return sd_notify(0, state); }

int ctd_sd_watchdog_enabled(uint64_t *usec) { return sd_watchdog_enabled(0, usec); }
