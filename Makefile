# moat — minimal VMM over Linux KVM.
#   make            build build/moat
#   make ARCH=arm64 cross-build build/arm64/moat (static; CROSS_COMPILE, default aarch64-linux-gnu-)
#   make run        boot the default guest (fetches it; uses the nested test bed if this host's KVM cannot boot Linux)
#   make test       unit tests, host-KVM tests, end-to-end scenarios (x86_64 and arm64)
#   make ARCH=arm64 test-kvm  the arm64 host-KVM tests (build/arm64/kvm-tests; on x86_64, in the arm64 test bed)
ARCH     ?= x86_64
CFLAGS   ?= -O2 -g

ifeq ($(ARCH),x86_64)
ARCH_DIR := arch/x86
BUILD    ?= build
CC       ?= gcc
NL_CFLAGS := $(shell pkg-config --cflags libnl-route-3.0 2>/dev/null || echo -I/usr/include/libnl3)
NL_LIBS   := $(shell pkg-config --libs libnl-route-3.0 2>/dev/null || echo -lnl-route-3 -lnl-3)
else ifeq ($(ARCH),arm64)
# Cross build from Debian's :arm64 -dev packages. libfdt-dev:arm64 cannot be co-installed with the
# host's, so tools/arm64-sysroot.sh extracts it into $(SYSROOT). Linked statically: the nested test
# bed's arm64 L1 runs it without the host's (x86) shared libraries.
ARCH_DIR := arch/arm64
BUILD    ?= build/arm64
CROSS_COMPILE ?= aarch64-linux-gnu-
override CC := $(CROSS_COMPILE)gcc
override AR := $(CROSS_COMPILE)ar
SYSROOT  := $(BUILD)/sysroot
NL_CFLAGS := -I/usr/include/libnl3
NL_LIBS   := -lnl-route-3 -lnl-3
CFLAGS   += -I$(SYSROOT)/usr/include
LDFLAGS  += -static -L$(SYSROOT)/usr/lib/aarch64-linux-gnu
ARCH_LIBS := -lfdt
else
$(error unsupported ARCH=$(ARCH); supported: x86_64, arm64)
endif

CFLAGS   += -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter -I. -I$(ARCH_DIR) -MMD -MP -pthread
CFLAGS   += $(NL_CFLAGS)
LDLIBS   += $(ARCH_LIBS) -pthread -lseccomp -lcap-ng $(NL_LIBS)

LIB_SRCS := $(wildcard vmm/*.c devices/*.c devices/*/*.c iommu/*.c vhost/*.c $(ARCH_DIR)/*.c)
LIB_SRCS := $(filter-out vmm/main.c,$(LIB_SRCS))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
UNIT_SRCS := $(wildcard tests/unit/*.c)
# Pure modules of other arches, unit-tested on the build host too (the arm64 device-tree builder).
UNIT_ARCH_SRCS := $(filter-out $(LIB_SRCS),arch/arm64/fdt.c arch/arm64/boot.c)
ifeq ($(ARCH),arm64)
# A plain program (tests/kvm-arm64), static like moat: Debian has no static Criterion for arm64.
KVM_SRCS  := $(wildcard tests/kvm-arm64/*.c)
KVM_LIBS  :=
else
KVM_SRCS  := $(wildcard tests/kvm/*.c)
KVM_LIBS  := -lcriterion
endif

all: $(BUILD)/moat

ifeq ($(ARCH),arm64)
$(BUILD)/sysroot/.stamp: tools/arm64-sysroot.sh
	@tools/arm64-sysroot.sh $(BUILD)/sysroot
$(LIB_SRCS:%.c=$(BUILD)/obj/%.o) $(KVM_SRCS:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/vmm/main.o: $(BUILD)/sysroot/.stamp
endif

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libmoat.a: $(LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/moat: $(BUILD)/obj/vmm/main.o $(BUILD)/libmoat.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests run under AddressSanitizer and UBSan, with their own objects.
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
$(BUILD)/obj-san/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN_FLAGS) -O1 -c -o $@ $<

$(BUILD)/unit-tests: $(UNIT_SRCS:%.c=$(BUILD)/obj-san/%.o) $(LIB_SRCS:%.c=$(BUILD)/obj-san/%.o) \
		$(UNIT_ARCH_SRCS:%.c=$(BUILD)/obj-san/%.o)
	$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ -lcriterion -lfdt $(LDLIBS)

$(BUILD)/kvm-tests: $(KVM_SRCS:%.c=$(BUILD)/obj/%.o) $(BUILD)/libmoat.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(KVM_LIBS) $(LDLIBS)

# Micro-benchmark of the IO page tables (bench/iommu_micro.c).
$(BUILD)/bench/iommu-micro: bench/iommu_micro.c $(BUILD)/libmoat.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# What one register write costs by kind of exit (bench/exitcost.c); run it where KVM can run a guest.
$(BUILD)/bench/exitcost: bench/exitcost.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^

deps:
	@tools/install-deps.sh

guest: deps
	@tools/guest-images.sh --arch $(ARCH)

run: deps all
	@tools/run-default.sh --arch $(ARCH)

test: deps
	@tools/test-all.sh --arch $(ARCH)

test-unit: $(BUILD)/unit-tests
	$(BUILD)/unit-tests

test-kvm: $(BUILD)/kvm-tests
	@tools/run-kvm-tests.sh --arch $(ARCH) $(BUILD)/kvm-tests

test-e2e: all
	@tests/e2e/run-nested.sh --arch $(ARCH)

clean:
	rm -rf $(BUILD)/obj $(BUILD)/obj-san $(BUILD)/moat $(BUILD)/*.a $(BUILD)/*-tests

.PHONY: all deps guest run test test-unit test-kvm test-e2e clean
-include $(shell find $(BUILD)/obj $(BUILD)/obj-san -name "*.d" 2>/dev/null)
