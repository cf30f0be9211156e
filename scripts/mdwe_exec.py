#!/usr/bin/env python3
# Exec a command with PR_SET_MDWE (PR_MDWE_REFUSE_EXEC_GAIN) set: the kernel then refuses writable+executable
# mappings, as systemd's MemoryDenyWriteExecute= does; the flag is kept across execve (Linux 6.3 and later).
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
r = libc.prctl(65, 1, 0, 0, 0)  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
if r != 0:
    print("PR_SET_MDWE failed errno", ctypes.get_errno()); sys.exit(2)
print("MDWE set, get =", libc.prctl(66, 0, 0, 0, 0), flush=True)
os.execvp(sys.argv[1], sys.argv[1:])
