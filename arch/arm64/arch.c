/* arm64 arch hooks: memory map, vGICv3 + ITS, PSCI vCPUs, platform devices, Image loading, device tree. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "arch/arm64/boot.h"
#include "arch/arm64/fdt.h"
#include "arch/arm64/layout.h"
#include "devices/pci/pci.h"
#include "devices/platform.h"
#include "devices/serial.h"
#include "vmm/devices.h"
#include "vmm/vm.h"

#define SZ_2M 0x200000ull

#define CORE_REG(name) \
	(KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (offsetof(struct kvm_regs, name) / sizeof(uint32_t)))
/* EL1h with D, A, I, F masked: the boot protocol's entry state. */
#define PSTATE_EL1H_MASKED 0x3c5ull

/* What KVM_IRQ_LINE takes for SPI n. */
static unsigned int spi_line(unsigned int spi)
{
	return (KVM_ARM_IRQ_TYPE_SPI << KVM_ARM_IRQ_TYPE_SHIFT) | (32u + spi);
}

int arch_memory_layout(struct vm *vm, char *err, size_t errlen)
{
	uint64_t mem = vm->cfg.mem_size;
	struct sysinfo si;
	int r;

	if (sysinfo(&si) == 0) {
		uint64_t host = (uint64_t)si.totalram * si.mem_unit;
		if (mem > host)
			return set_err(err, errlen, -ENOMEM,
				    "--memory %lluM is more than this host's %lluM of RAM; choose a smaller --memory",
				    (unsigned long long)(mem >> 20), (unsigned long long)(host >> 20));
	}
	if (mem > ARM64_RAM_MAX)
		return set_err(err, errlen, -E2BIG, "--memory is more than the %llu GiB moat maps on arm64",
			    (unsigned long long)(ARM64_RAM_MAX >> 30));
	r = gm_add_region(&vm->mem, ARM64_RAM_BASE, mem);
	if (r)
		return set_err(err, errlen, r, "bad memory layout for --memory %llu bytes", (unsigned long long)mem);
	return 0;
}

static int set_attr(int fd, uint32_t group, uint64_t attr, const void *val)
{
	struct kvm_device_attr a = { .group = group, .attr = attr, .addr = (uint64_t)(uintptr_t)val };

	return ioctl(fd, KVM_SET_DEVICE_ATTR, &a) < 0 ? -errno : 0;
}

static int create_device(struct vm *vm, uint32_t type, int *fd)
{
	struct kvm_create_device cd = { .type = type };

	if (ioctl(vm->vm_fd, KVM_CREATE_DEVICE, &cd) < 0)
		return -errno;
	*fd = (int)cd.fd;
	return 0;
}

int arch_vm_init(struct vm *vm, char *err, size_t errlen)
{
	struct kvm_vcpu_init pref;
	uint64_t dist = ARM64_GIC_DIST_BASE, redist = ARM64_GIC_REDIST_BASE, its = ARM64_GIC_ITS_BASE;
	int r;

	if (ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_ARM_PSCI_0_2) <= 0)
		return set_err(err, errlen, -ENOTSUP, "this host's KVM lacks PSCI 0.2 (KVM_CAP_ARM_PSCI_0_2)");
	if (ioctl(vm->vm_fd, KVM_ARM_PREFERRED_TARGET, &pref) < 0)
		return set_err(err, errlen, -errno, "KVM_ARM_PREFERRED_TARGET failed: %s", strerror(errno));
	vm->arch.vcpu_target = pref.target;

	r = create_device(vm, KVM_DEV_TYPE_ARM_VGIC_V3, &vm->arch.gic_fd);
	if (r)
		return set_err(err, errlen, r,
			    "this host's KVM cannot emulate a GICv3 (KVM_CREATE_DEVICE: %s); moat needs a GICv3 host",
			    strerror(-r));
	vm->arch.have_gic = true;
	r = set_attr(vm->arch.gic_fd, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_DIST, &dist);
	if (!r)
		r = set_attr(vm->arch.gic_fd, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_REDIST, &redist);
	if (r)
		return set_err(err, errlen, r, "cannot place the GICv3: %s", strerror(-r));

	/* MSI-X goes through an ITS, whose device ids are the PCI requester ids. */
	r = create_device(vm, KVM_DEV_TYPE_ARM_VGIC_ITS, &vm->arch.its_fd);
	if (r)
		return set_err(err, errlen, r, "this host's KVM cannot emulate a GICv3 ITS (KVM_CREATE_DEVICE: %s)",
			    strerror(-r));
	vm->arch.have_its = true;
	r = set_attr(vm->arch.its_fd, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_ITS_ADDR_TYPE, &its);
	if (r)
		return set_err(err, errlen, r, "cannot place the GICv3 ITS: %s", strerror(-r));
	/* Asked of the VM: the answer depends on the irqchip the VM has. */
	if (ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MSI_DEVID) <= 0)
		return set_err(err, errlen, -ENOTSUP, "this host's KVM lacks KVM_CAP_MSI_DEVID, which the ITS needs");
	vm->msi_devid = true;
	return 0;
}

/* Once every vCPU exists: size and initialise the vGIC, then the ITS (else KVM_RUN fails with ENXIO). */
static int gic_finish(struct vm *vm, char *err, size_t errlen)
{
	uint32_t nr_irqs = ARM64_GIC_NR_IRQS;
	int r;

	r = set_attr(vm->arch.gic_fd, KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, &nr_irqs);
	if (!r)
		r = set_attr(vm->arch.gic_fd, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT, NULL);
	if (r)
		return set_err(err, errlen, r, "cannot initialise the GICv3: %s", strerror(-r));
	r = set_attr(vm->arch.its_fd, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT, NULL);
	if (r)
		return set_err(err, errlen, r, "cannot initialise the GICv3 ITS: %s", strerror(-r));
	/* KVM takes irqfds only from now on. */
	r = vm_msi_connect_pending(vm);
	if (r)
		return set_err(err, errlen, r, "cannot connect the MSI irqfds: %s", strerror(-r));
	return 0;
}

unsigned int arch_msi_first_gsi(void)
{
	return ARM64_MSI_FIRST_GSI;
}

/* The ITS translation frame: an MSI is a write there, whatever IOMMU mappings say. */
uint64_t arch_msi_window_start(void)
{
	return ARM64_GIC_ITS_BASE + 0x10000;
}

uint64_t arch_msi_window_end(void)
{
	return ARM64_GIC_ITS_BASE + 0x1ffff;
}

/* SPIs are raised with KVM_IRQ_LINE, not through routes: the table holds MSIs only. */
unsigned int arch_msi_default_routes(struct kvm_irq_routing_entry *out, unsigned int max)
{
	(void)out;
	(void)max;
	return 0;
}

static void pci_reset_request(void *ctx)
{
	vm_request_stop(ctx, VM_STOP_REBOOT, "the guest rebooted (PCI reset register)");
}

/* pci-host-ecam-generic: ECAM for bus 0 and one 32-bit memory window; no I/O space. */
static int add_pci_host(struct vm *vm)
{
	return vm_add_pci_host(vm, ARM64_PCI_ECAM_BASE, ARM64_PCI_ECAM_SIZE, ARM64_PCI_MMIO_BASE, ARM64_PCI_MMIO_SIZE,
			       pci_reset_request);
}

int arch_add_devices(struct vm *vm, char *err, size_t errlen)
{
	int r = serial_create_mmio(vm, ARM64_UART_BASE, spi_line(ARM64_UART_SPI));

	if (!r)
		r = pvpanic_create_mmio(vm, ARM64_PVPANIC_BASE, ARM64_PVPANIC_SIZE);
	if (!r)
		r = add_pci_host(vm);
	if (r)
		return set_err(err, errlen, r, "cannot add platform devices: %s", strerror(-r));
	return 0;
}

/* The kernel at the start of RAM (+ text_offset); returns where its memory ends. */
static int load_kernel(struct vm *vm, uint64_t limit, uint64_t *end, char *err, size_t errlen)
{
	const char *path = vm->cfg.kernel;
	uint8_t head[ARM64_IMAGE_HEADER_BYTES];
	struct arm64_image img;
	uint64_t size = 0, addr;
	ssize_t n;
	int fd, r;

	fd = vm_open_input(path, "--kernel", &size, err, errlen);
	if (fd < 0)
		return fd;
	n = pread(fd, head, sizeof(head), 0);
	r = n < 0 ? -errno : arm64_image_parse(head, (size_t)n, size, &img);
	if (r) {
		close(fd);
		if (r == -EMEDIUMTYPE)
			return set_err(err, errlen, r,
				    "kernel '%s' is gzip-compressed (like Debian's arm64 vmlinuz); decompress it first "
				    "(zcat '%s' > Image) and give --kernel the Image",
				    path, path);
		return set_err(err, errlen, r, "kernel '%s' is not an arm64 Linux Image; give --kernel an arm64 Image",
			    path);
	}
	addr = ARM64_RAM_BASE + img.text_offset;
	*end = addr + img.image_size;
	if (*end > limit) {
		close(fd);
		return set_err(err, errlen, -ENOMEM, "kernel '%s' needs %llu MiB of guest memory; raise --memory", path,
			    (unsigned long long)((*end - ARM64_RAM_BASE + ARM64_FDT_MAX) >> 20) + 1);
	}
	/* GUEST: [addr, addr + size) is inside RAM (size <= image_size, end <= limit); gm_load_fd checks it again. */
	r = gm_load_fd(&vm->mem, addr, fd, 0, size);
	close(fd);
	if (r)
		return set_err(err, errlen, r, "cannot read kernel '%s': %s", path, strerror(-r));
	vm->arch.kernel_entry = addr;
	log_debug(&vm->log, "kernel at 0x%llx (%llu bytes, %llu in memory)", (unsigned long long)addr,
		  (unsigned long long)size, (unsigned long long)img.image_size);
	return 0;
}

/* The initrd just below limit (the device tree), page-aligned, above the kernel's memory. */
static int load_initrd(struct vm *vm, uint64_t kernel_end, uint64_t limit, uint64_t *addr, uint64_t *size,
		       char *err, size_t errlen)
{
	const char *path = vm->cfg.initrd;
	int fd = vm_open_input(path, "--initrd", size, err, errlen);
	int r;

	if (fd < 0)
		return fd;
	if (*size > limit - kernel_end || ((limit - *size) & ~0xfffull) < kernel_end) {
		close(fd);
		return set_err(err, errlen, -ENOMEM,
			    "initrd '%s' (%llu MiB) does not fit in guest memory next to the kernel; raise --memory",
			    path, (unsigned long long)(*size >> 20));
	}
	*addr = (limit - *size) & ~0xfffull;
	/* GUEST: [addr, addr + size) lies between the kernel's end and the device tree; gm_load_fd checks it again. */
	r = gm_load_fd(&vm->mem, *addr, fd, 0, *size);
	close(fd);
	if (r)
		return set_err(err, errlen, r, "cannot read initrd '%s': %s", path, strerror(-r));
	return 0;
}

int arch_load_guest(struct vm *vm, char *err, size_t errlen)
{
	uint64_t ram_end = ARM64_RAM_BASE + vm->cfg.mem_size;
	uint64_t fdt_addr = (ram_end - ARM64_FDT_MAX) & ~(SZ_2M - 1);
	struct arm64_machine m = {
		.ncpus = vm->cfg.cpus,
		.ram = { ARM64_RAM_BASE, vm->cfg.mem_size },
		.gic_dist = { ARM64_GIC_DIST_BASE, ARM64_GIC_DIST_SIZE },
		.gic_redist = { ARM64_GIC_REDIST_BASE, ARM64_GIC_REDIST_SIZE * vm->cfg.cpus },
		.gic_its = { ARM64_GIC_ITS_BASE, ARM64_GIC_ITS_SIZE },
		.uart = { ARM64_UART_BASE, ARM64_UART_SIZE },
		.uart_spi = ARM64_UART_SPI,
		.uart_clock = ARM64_UART_CLOCK,
		.pvpanic = { ARM64_PVPANIC_BASE, ARM64_PVPANIC_SIZE },
		.pci_ecam = { ARM64_PCI_ECAM_BASE, ARM64_PCI_ECAM_SIZE },
		.pci_mmio = { ARM64_PCI_MMIO_BASE, ARM64_PCI_MMIO_SIZE },
		.bootargs = vm->cfg.cmdline,
	};
	uint64_t kernel_end = 0;
	void *fdt;
	long n;
	int r;

	r = load_kernel(vm, fdt_addr, &kernel_end, err, errlen);
	if (r)
		return r;
	if (vm->cfg.initrd) {
		r = load_initrd(vm, kernel_end, fdt_addr, &m.initrd_start, &m.initrd_size, err, errlen);
		if (r)
			return r;
	}
	if (vm->iommu_topo.present) {
		m.has_iommu = 1;
		m.iommu_bdf = vm->iommu_topo.iommu_bdf;
		for (unsigned int i = 0; i < vm->iommu_topo.nendpoints && i < ARM64_FDT_MAX_ENDPOINTS; i++)
			m.endpoint_bdf[m.nendpoints++] = vm->iommu_topo.endpoint_bdf[i];
	}
	fdt = gm_ptr(&vm->mem, fdt_addr, ARM64_FDT_MAX);
	n = fdt ? arm64_fdt_build(&m, fdt, ARM64_FDT_MAX) : -EFAULT;
	if (n < 0)
		return set_err(err, errlen, (int)n, "cannot build the device tree: %s", strerror((int)-n));
	vm->arch.fdt_addr = fdt_addr;
	log_debug(&vm->log, "device tree at 0x%llx (%ld bytes), initrd at 0x%llx (%llu bytes)",
		  (unsigned long long)fdt_addr, n, (unsigned long long)m.initrd_start,
		  (unsigned long long)m.initrd_size);
	return 0;
}

static int set_reg(int fd, uint64_t id, uint64_t val)
{
	struct kvm_one_reg reg = { .id = id, .addr = (uint64_t)(uintptr_t)&val };

	return ioctl(fd, KVM_SET_ONE_REG, &reg) < 0 ? -errno : 0;
}

int arch_vcpu_init(struct vm *vm, struct vcpu *vcpu, char *err, size_t errlen)
{
	struct kvm_vcpu_init init = { .target = vm->arch.vcpu_target };
	int r = 0;

	/* PSCI 0.2+ (CPU_ON, SYSTEM_OFF, SYSTEM_RESET); secondaries wait powered off for CPU_ON. */
	init.features[0] = 1u << KVM_ARM_VCPU_PSCI_0_2;
	if (vcpu->id)
		init.features[0] |= 1u << KVM_ARM_VCPU_POWER_OFF;
	if (ioctl(vcpu->fd, KVM_ARM_VCPU_INIT, &init) < 0)
		return set_err(err, errlen, -errno, "cannot set up vCPU %u (KVM_ARM_VCPU_INIT): %s", vcpu->id,
			    strerror(errno));
	if (vcpu->id == 0) {
		/* The boot protocol: x0 = device tree, x1-x3 = 0, MMU and caches off, EL1h, interrupts masked. */
		r = set_reg(vcpu->fd, CORE_REG(regs.regs[0]), vm->arch.fdt_addr);
		for (unsigned int i = 1; i < 4 && !r; i++)
			r = set_reg(vcpu->fd, CORE_REG(regs.regs[i]), 0);
		if (!r)
			r = set_reg(vcpu->fd, CORE_REG(regs.pstate), PSTATE_EL1H_MASKED);
		if (!r)
			r = set_reg(vcpu->fd, CORE_REG(regs.pc), vm->arch.kernel_entry);
		if (r)
			return set_err(err, errlen, r, "cannot set vCPU 0's boot registers: %s", strerror(-r));
	}
	if (vcpu->id + 1 == vm->nvcpus)
		r = gic_finish(vm, err, errlen);
	return r;
}

/*
 * The arm64 guest kernels moat is tested with have no pvpanic driver. With reboot=panic_warm on their
 * command line, a panic resets through PSCI SYSTEM_RESET2 (a warm reset) while reboot(8) uses
 * SYSTEM_RESET, so the kind of reset tells a panic from a reboot.
 */
enum vm_stop_reason arch_reset_reason(const struct kvm_run *run, const char **what)
{
	if (run->system_event.data[0] & KVM_SYSTEM_EVENT_RESET_FLAG_PSCI_RESET2) {
		*what = "PSCI SYSTEM_RESET2: the warm reset a guest with reboot=panic_warm makes on a panic";
		return VM_STOP_PANIC;
	}
	*what = NULL;
	return VM_STOP_REBOOT;
}

void arch_vcpu_describe(struct vcpu *vcpu, char *buf, size_t len)
{
	uint64_t pc = 0, pstate = 0;
	struct kvm_one_reg reg = { .id = CORE_REG(regs.pc), .addr = (uint64_t)(uintptr_t)&pc };

	buf[0] = '\0';
	if (ioctl(vcpu->fd, KVM_GET_ONE_REG, &reg) < 0)
		return;
	reg.id = CORE_REG(regs.pstate);
	reg.addr = (uint64_t)(uintptr_t)&pstate;
	if (ioctl(vcpu->fd, KVM_GET_ONE_REG, &reg) < 0)
		return;
	snprintf(buf, len, "pc=0x%llx pstate=0x%llx", (unsigned long long)pc, (unsigned long long)pstate);
}

void arch_vm_destroy(struct vm *vm)
{
	if (vm->arch.have_its)
		close(vm->arch.its_fd);
	if (vm->arch.have_gic)
		close(vm->arch.gic_fd);
	vm->arch.have_its = vm->arch.have_gic = false;
}
