/* x86_64 arch hooks: memory map, in-kernel irqchip, platform devices, bzImage loading. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "arch/x86/acpi.h"
#include "arch/x86/boot.h"
#include "arch/x86/cpu.h"
#include "arch/x86/layout.h"
#include "devices/pci/pci.h"
#include "devices/platform.h"
#include "devices/serial.h"
#include "vmm/devices.h"
#include "vmm/vm.h"

static uint64_t low_ram_end(const struct vm *vm)
{
	return vm->cfg.mem_size < X86_MMIO_HOLE_START ? vm->cfg.mem_size : X86_MMIO_HOLE_START;
}

int arch_memory_layout(struct vm *vm, char *err, size_t errlen)
{
	uint64_t mem = vm->cfg.mem_size;
	uint64_t low = low_ram_end(vm);
	struct sysinfo si;
	int r;

	if (sysinfo(&si) == 0) {
		uint64_t host = (uint64_t)si.totalram * si.mem_unit;
		if (mem > host)
			return set_err(err, errlen, -ENOMEM,
				    "--memory %lluM is more than this host's %lluM of RAM; choose a smaller --memory",
				    (unsigned long long)(mem >> 20), (unsigned long long)(host >> 20));
	}
	r = gm_add_region(&vm->mem, 0, low);
	if (!r && mem > low)
		r = gm_add_region(&vm->mem, X86_MMIO_HOLE_END, mem - low);
	if (r)
		return set_err(err, errlen, r, "bad memory layout for --memory %llu bytes", (unsigned long long)mem);
	return 0;
}

int arch_vm_init(struct vm *vm, char *err, size_t errlen)
{
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	uint64_t idmap = X86_IDENTITY_MAP;
	int r;

	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)X86_TSS_ADDR) < 0)
		return set_err(err, errlen, -errno, "KVM_SET_TSS_ADDR failed: %s", strerror(errno));
	if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0 &&
	    ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
		return set_err(err, errlen, -errno, "KVM_SET_IDENTITY_MAP_ADDR failed: %s", strerror(errno));
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return set_err(err, errlen, -errno, "KVM_CREATE_IRQCHIP failed: %s", strerror(errno));
	if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return set_err(err, errlen, -errno, "KVM_CREATE_PIT2 failed: %s", strerror(errno));
	r = x86_cpuid_supported(vm->kvm_fd, &vm->arch.cpuid);
	if (r)
		return set_err(err, errlen, r, "KVM_GET_SUPPORTED_CPUID failed: %s", strerror(-r));
	return 0;
}

static const struct bus_ops cf8_ops = { .read = pci_cf8_read, .write = pci_cf8_write };
static const struct bus_ops pci_io_ops = { .read = pci_io_read, .write = pci_io_write };

static void pci_reset_request(void *ctx)
{
	vm_request_stop(ctx, VM_STOP_REBOOT, "the guest rebooted (reset control register 0xcf9)");
}

/* The PCI host bridge: ECAM, the legacy config ports, the memory and I/O windows; devices join it later. */
static int add_pci_host(struct vm *vm)
{
	int r = vm_add_pci_host(vm, X86_PCI_ECAM_START, X86_PCI_ECAM_SIZE, X86_PCI_MMIO_START, X86_PCI_MMIO_SIZE,
				pci_reset_request);

	if (!r)
		r = bus_register(&vm->pio, X86_PCI_CF8_PORT, 8, &cf8_ops, vm->pci, "pci-cf8");
	if (!r) {
		pci_bus_set_io_window(vm->pci, X86_PCI_IO_START, X86_PCI_IO_SIZE);
		r = bus_register(&vm->pio, X86_PCI_IO_START, X86_PCI_IO_SIZE, &pci_io_ops, vm->pci, "pci-io");
	}
	return r;
}

unsigned int arch_msi_first_gsi(void)
{
	return X86_MSI_FIRST_GSI;
}

/* x86: an MSI is a write to 0xfeeXXXXX, whatever IOMMU mappings say. */
uint64_t arch_msi_window_start(void)
{
	return X86_LAPIC_ADDR;
}

uint64_t arch_msi_window_end(void)
{
	return X86_LAPIC_ADDR + 0xfffff;
}

/* What KVM_CREATE_IRQCHIP routes by default: GSI n to IOAPIC pin n, and GSIs 0-15 to the 8259s too. */
unsigned int arch_msi_default_routes(struct kvm_irq_routing_entry *out, unsigned int max)
{
	unsigned int n = 0;

	for (unsigned int gsi = 0; gsi < X86_MSI_FIRST_GSI && n < max; gsi++) {
		out[n++] = (struct kvm_irq_routing_entry){ .gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
							   .u.irqchip = { .irqchip = KVM_IRQCHIP_IOAPIC, .pin = gsi } };
		if (gsi < 16 && n < max)
			out[n++] = (struct kvm_irq_routing_entry){
				.gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
				.u.irqchip = { .irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE,
					       .pin = gsi % 8 } };
	}
	return n;
}

int arch_add_devices(struct vm *vm, char *err, size_t errlen)
{
	int r = serial_create(vm, X86_COM1_PORT, X86_COM1_IRQ);

	if (!r)
		r = pvpanic_create(vm, X86_PVPANIC_PORT);
	if (!r)
		r = acpi_pm_create(vm, X86_PM_SLEEP_CTL, X86_PM_SLEEP_STS, X86_PM_RESET, X86_PM_RESET_VALUE,
				   X86_S5_SLP_TYP);
	if (!r)
		r = i8042_reset_create(vm, X86_I8042_CMD_PORT);
	if (!r)
		r = add_pci_host(vm);
	if (r)
		return set_err(err, errlen, r, "cannot add platform devices: %s", strerror(-r));
	return 0;
}

static int load_initrd(struct vm *vm, uint64_t kernel_end, uint32_t initrd_addr_max, uint64_t *addr,
		       uint64_t *size, char *err, size_t errlen)
{
	const char *path = vm->cfg.initrd;
	int fd = vm_open_input(path, "--initrd", size, err, errlen);
	int r;

	if (fd < 0)
		return fd;
	r = initrd_place(low_ram_end(vm), initrd_addr_max, kernel_end, *size, addr);
	if (r) {
		close(fd);
		return set_err(err, errlen, r,
			    "initrd '%s' (%llu MiB) does not fit in guest memory next to the kernel; raise --memory",
			    path, (unsigned long long)(*size >> 20));
	}
	/* GUEST: initrd_place() kept [addr, addr+size) inside low RAM; gm_load_fd() checks it again. */
	r = gm_load_fd(&vm->mem, *addr, fd, 0, *size);
	close(fd);
	if (r)
		return set_err(err, errlen, r, "cannot read initrd '%s': %s", path, strerror(-r));
	return 0;
}

int arch_load_guest(struct vm *vm, char *err, size_t errlen)
{
	struct boot_layout bl = { .cmdline_addr = X86_CMDLINE_ADDR };
	struct e820_layout el = { .low_ram_end = low_ram_end(vm),
				  .high_ram_size = vm->cfg.mem_size - low_ram_end(vm) };
	struct acpi_config acpi = acpi_platform_config(vm->cfg.cpus);
	uint8_t head[BZIMAGE_HEADER_BYTES];
	struct boot_params *bp;
	struct bzimage bz;
	uint64_t size = 0, kernel_end;
	ssize_t head_len;
	void *acpi_buf;
	long used;
	int fd, r;

	fd = vm_open_input(vm->cfg.kernel, "--kernel", &size, err, errlen);
	if (fd < 0)
		return fd;
	head_len = pread(fd, head, sizeof(head), 0);
	r = head_len < 0 ? -errno : bzimage_parse(head, (size_t)head_len, size, &bz);
	if (r) {
		close(fd);
		if (r == -ENOTSUP)
			return set_err(err, errlen, r,
				    "kernel '%s' has no 64-bit entry point (boot protocol < 2.12); use an x86_64 "
				    "kernel",
				    vm->cfg.kernel);
		return set_err(err, errlen, r,
			    "kernel '%s' is not an x86 bzImage; give --kernel the vmlinuz/bzImage file",
			    vm->cfg.kernel);
	}
	/* The decompressor works in [load_addr, load_addr + init_size). */
	kernel_end = bz.load_addr + (bz.hdr.init_size > bz.kernel_size ? bz.hdr.init_size : bz.kernel_size);
	if (kernel_end > el.low_ram_end) {
		close(fd);
		return set_err(err, errlen, -ENOMEM, "kernel '%s' needs %llu MiB of guest memory; raise --memory",
			    vm->cfg.kernel, (unsigned long long)(kernel_end >> 20) + 1);
	}
	r = gm_load_fd(&vm->mem, bz.load_addr, fd, bz.setup_size, bz.kernel_size);
	close(fd);
	if (r)
		return set_err(err, errlen, r, "cannot read kernel '%s': %s", vm->cfg.kernel, strerror(-r));

	bl.cmdline_len = (uint32_t)strlen(vm->cfg.cmdline);
	if (bl.cmdline_len + 1 > X86_CMDLINE_MAX ||
	    (bz.hdr.cmdline_size && bl.cmdline_len > bz.hdr.cmdline_size))
		return set_err(err, errlen, -E2BIG, "--cmdline is %u bytes; this kernel accepts at most %u",
			    bl.cmdline_len, bz.hdr.cmdline_size);
	r = gm_write(&vm->mem, X86_CMDLINE_ADDR, vm->cfg.cmdline, bl.cmdline_len + 1);
	if (r)
		return set_err(err, errlen, r, "cannot write the command line to guest memory");
	if (vm->cfg.initrd) {
		r = load_initrd(vm, kernel_end, bz.hdr.initrd_addr_max, &bl.initrd_addr, &bl.initrd_size, err,
				errlen);
		if (r)
			return r;
	}

	if (vm->iommu_topo.present) {
		acpi.viot_iommu_bdf = vm->iommu_topo.iommu_bdf;
		for (unsigned int i = 0; i < vm->iommu_topo.nendpoints && i < ACPI_VIOT_MAX_RANGES; i++) {
			acpi.viot_ranges[i].bdf_start = acpi.viot_ranges[i].bdf_end = vm->iommu_topo.endpoint_bdf[i];
			acpi.viot_nranges++;
		}
	}
	acpi_buf = gm_ptr(&vm->mem, X86_ACPI_START, X86_ACPI_SIZE);
	used = acpi_buf ? acpi_build_tables(&acpi, acpi_buf, X86_ACPI_SIZE, X86_ACPI_START, &bl.rsdp_addr) : -EFAULT;
	if (used < 0)
		return set_err(err, errlen, (int)used, "cannot build ACPI tables: %s", strerror((int)-used));
	vm->arch.rsdp_addr = bl.rsdp_addr;

	bp = gm_ptr(&vm->mem, X86_ZERO_PAGE_ADDR, sizeof(*bp));
	r = bp ? boot_params_build(bp, &bz, &bl, &el) : -EFAULT;
	if (!r)
		r = x86_setup_boot_tables(&vm->mem);
	vm->arch.kernel_entry = bz.load_addr + 0x200; /* startup_64 */
	if (r)
		return set_err(err, errlen, r, "cannot write boot data: %s", strerror(-r));
	log_debug(&vm->log, "kernel at 0x%llx (%llu bytes), initrd at 0x%llx (%llu bytes), RSDP at 0x%llx",
		  (unsigned long long)bz.load_addr, (unsigned long long)bz.kernel_size, (unsigned long long)bl.initrd_addr,
		  (unsigned long long)bl.initrd_size, (unsigned long long)bl.rsdp_addr);
	return 0;
}

int arch_vcpu_init(struct vm *vm, struct vcpu *vcpu, char *err, size_t errlen)
{
	int r = x86_vcpu_setup(vm->kvm_fd, vcpu->fd, vm->arch.cpuid, vcpu->id, vm->nvcpus, vcpu->id == 0,
			       vm->arch.kernel_entry, X86_ZERO_PAGE_ADDR);

	if (r)
		return set_err(err, errlen, r, "cannot set up vCPU %u: %s", vcpu->id, strerror(-r));
	return 0;
}

/* A panic reaches moat through pvpanic; a reset is a reboot. */
enum vm_stop_reason arch_reset_reason(const struct kvm_run *run, const char **what)
{
	(void)run;
	*what = NULL;
	return VM_STOP_REBOOT;
}

void arch_vcpu_describe(struct vcpu *vcpu, char *buf, size_t len)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;

	buf[0] = '\0';
	if (ioctl(vcpu->fd, KVM_GET_REGS, &regs) < 0 || ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
		return;
	snprintf(buf, len, "rip=0x%llx rsp=0x%llx cr0=0x%llx cr2=0x%llx cr3=0x%llx cr4=0x%llx efer=0x%llx",
		 (unsigned long long)regs.rip, (unsigned long long)regs.rsp, (unsigned long long)sregs.cr0,
		 (unsigned long long)sregs.cr2, (unsigned long long)sregs.cr3, (unsigned long long)sregs.cr4,
		 (unsigned long long)sregs.efer);
	/*
	 * The last page fault was on fetching the instruction the vCPU is at: a guest that stopped there
	 * keeps taking that fault (its page tables, or the TLBs under them, disagree with its handler).
	 */
	if (regs.rip == sregs.cr2 && regs.rip) {
		size_t n = strlen(buf);

		snprintf(buf + n, len - n, " (rip = cr2: the last page fault was on fetching this instruction)");
	}
}

void arch_vm_destroy(struct vm *vm)
{
	free(vm->arch.cpuid);
	vm->arch.cpuid = NULL;
}
