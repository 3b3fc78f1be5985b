#!/bin/sh
# Crash the kernel on purpose (the pvpanic device tells the VMM).
echo "moat-scenario: triggering a kernel panic"
echo c >/proc/sysrq-trigger
echo "moat-scenario: still alive after the panic trigger"
