#!/bin/sh
# The kernel's log, for looking into a boot (say with initcall_debug and quiet: the log has what the console
# did not print), and the guest's uptime when this scenario started.
echo "UPTIME=$(cut -d' ' -f1 /proc/uptime)"
dmesg
