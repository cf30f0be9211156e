#ifndef CSYSTEMD_H
#define CSYSTEMD_H
#include <stdint.h>

/* libsystemd's sd_notify(3): sends STATE to $NOTIFY_SOCKET. Returns > 0 when sent, 0 when no manager listens
   (NOTIFY_SOCKET unset), a negative errno on failure. unset_environment is 0: the variables stay for later calls. */
int ctd_sd_notify(const char *state);

/* sd_watchdog_enabled(3): > 0 and *usec set when WATCHDOG_USEC (and WATCHDOG_PID, if set, is this process) ask for
   keep-alive pings; 0 when not; a negative errno when the variables are malformed. */
int ctd_sd_watchdog_enabled(uint64_t *usec);
#endif
