#!/bin/sh
# Report how many CPUs the guest sees.
echo "NPROC=$(nproc)"
