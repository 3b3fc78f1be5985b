#!/bin/sh
# Never return: the VMM's --timeout has to stop the guest.
echo "moat-scenario: sleeping forever"
while :; do sleep 3600; done
