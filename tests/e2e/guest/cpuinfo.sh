#!/bin/sh
# What the guest's kernel made of the CPU it was given: the flags it uses, and its FPU/XSAVE setup lines.
echo "CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "CPU_FLAGS=$(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2-)"
dmesg | grep -iE 'x86/fpu|xsave|pku|la57|5-level' | sed 's/^/CPU_DMESG /'
