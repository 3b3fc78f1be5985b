/* vCPU threads: one per vCPU, each running KVM_RUN and dispatching exits to the buses. */
#ifndef MOAT_VCPU_H
#define MOAT_VCPU_H

#include "vmm/vm.h"

/* Install the (empty) signal handler used to kick vCPUs out of KVM_RUN. Call once, from main. */
int vcpu_signal_setup(void);
int vcpu_start(struct vcpu *vcpu) __attribute__((warn_unused_result));
/* Make the vCPU leave KVM_RUN soon; safe to call from any thread. */
void vcpu_kick(struct vcpu *vcpu);
void vcpu_join(struct vcpu *vcpu);
/* Run the vCPU on the calling thread until the VM stops (the thread body; tests call it directly). */
void vcpu_run_loop(struct vcpu *vcpu);

#endif
