# moat — minimal VMM over Linux KVM.
#   make            build build/moat
#   make run        boot the default guest (fetches it; uses the nested test bed if this host's KVM cannot boot Linux)
#   make test       unit tests, host-KVM tests, end-to-end scenarios
ARCH     ?= x86_64
BUILD    ?= build
CC       ?= gcc
CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter -I. -I$(ARCH_DIR) -MMD -MP -pthread
NL_CFLAGS := $(shell pkg-config --cflags libnl-route-3.0 2>/dev/null || echo -I/usr/include/libnl3)
NL_LIBS   := $(shell pkg-config --libs libnl-route-3.0 2>/dev/null || echo -lnl-route-3 -lnl-3)
CFLAGS   += $(NL_CFLAGS)
LDLIBS   += -pthread -lseccomp -lcap-ng $(NL_LIBS)

ifeq ($(ARCH),x86_64)
ARCH_DIR := arch/x86
else
$(error unsupported ARCH=$(ARCH); supported: x86_64)
endif

LIB_SRCS := $(wildcard vmm/*.c devices/*.c devices/*/*.c iommu/*.c vhost/*.c $(ARCH_DIR)/*.c)
LIB_SRCS := $(filter-out vmm/main.c,$(LIB_SRCS))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
UNIT_SRCS := $(wildcard tests/unit/*.c)
KVM_SRCS  := $(wildcard tests/kvm/*.c)

all: $(BUILD)/moat

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libmoat.a: $(LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/moat: $(BUILD)/obj/vmm/main.o $(BUILD)/libmoat.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests run under AddressSanitizer and UBSan, with their own objects.
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
$(BUILD)/obj-san/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN_FLAGS) -O1 -c -o $@ $<

$(BUILD)/unit-tests: $(UNIT_SRCS:%.c=$(BUILD)/obj-san/%.o) $(LIB_SRCS:%.c=$(BUILD)/obj-san/%.o)
	$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ -lcriterion $(LDLIBS)

$(BUILD)/kvm-tests: $(KVM_SRCS:%.c=$(BUILD)/obj/%.o) $(BUILD)/libmoat.a
	$(CC) $(CFLAGS) -o $@ $^ -lcriterion $(LDLIBS)

# Micro-benchmark of the IO page tables (bench/iommu_micro.c).
$(BUILD)/bench/iommu-micro: bench/iommu_micro.c $(BUILD)/libmoat.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

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
	@tools/run-kvm-tests.sh $(BUILD)/kvm-tests

test-e2e: all
	@tests/e2e/run-nested.sh --arch $(ARCH)

clean:
	rm -rf $(BUILD)/obj $(BUILD)/obj-san $(BUILD)/moat $(BUILD)/*.a $(BUILD)/*-tests

.PHONY: all deps guest run test test-unit test-kvm test-e2e clean
-include $(shell find $(BUILD)/obj $(BUILD)/obj-san -name "*.d" 2>/dev/null)
