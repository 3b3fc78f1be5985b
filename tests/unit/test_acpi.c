#include <criterion/criterion.h>
#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "arch/x86/acpi.h"
#include "arch/x86/acpi_tables.h"
#include "arch/x86/layout.h"

#define TABLES_GPA X86_ACPI_START
#define TABLES_SIZE X86_ACPI_SIZE

static struct acpi_config test_config(unsigned int ncpus)
{
	return acpi_platform_config(ncpus);
}

struct built {
	uint8_t *buf;
	uint64_t gpa;
	long used;
	uint64_t rsdp_gpa;
};

static struct built build(const struct acpi_config *cfg, uint64_t gpa)
{
	struct built b = { .buf = calloc(1, TABLES_SIZE), .gpa = gpa };

	cr_assert_not_null(b.buf);
	b.used = acpi_build_tables(cfg, b.buf, TABLES_SIZE, gpa, &b.rsdp_gpa);
	cr_assert_gt(b.used, 0, "acpi_build_tables: %ld", b.used);
	cr_assert_leq(b.used, (long)TABLES_SIZE);
	return b;
}

/* Host pointer for [gpa, gpa+len), which must lie in the bytes the builder reported using. */
static const uint8_t *at(const struct built *b, uint64_t gpa, size_t len)
{
	cr_assert_geq(gpa, b->gpa, "0x%llx below the tables", (unsigned long long)gpa);
	cr_assert_leq(gpa - b->gpa + len, (uint64_t)b->used, "0x%llx+%zu past the tables",
		      (unsigned long long)gpa, len);
	return b->buf + (gpa - b->gpa);
}

static uint8_t sum8(const void *p, size_t len)
{
	const uint8_t *c = p;
	uint8_t s = 0;

	while (len--)
		s += *c++;
	return s;
}

/* A table header at gpa whose whole length is in range and sums to zero. */
static const struct acpi_header *table(const struct built *b, uint64_t gpa, const char *sig)
{
	const struct acpi_header *h = (const void *)at(b, gpa, sizeof(*h));
	uint32_t len = le32toh(h->length);

	cr_assert_eq(memcmp(h->signature, sig, 4), 0, "expected %s, got %.4s", sig, h->signature);
	cr_assert_geq(len, sizeof(*h));
	at(b, gpa, len);
	cr_assert_eq(sum8(h, len), 0, "%s checksum", sig);
	cr_assert_eq(memcmp(h->oem_id, "MOAT  ", 6), 0);
	cr_assert_eq(memcmp(h->oem_table_id, "MOATVM  ", 8), 0);
	cr_assert_eq(memcmp(h->creator_id, "MOAT", 4), 0);
	return h;
}

static const struct acpi_rsdp *rsdp(const struct built *b)
{
	const struct acpi_rsdp *r = (const void *)at(b, b->rsdp_gpa, sizeof(*r));

	cr_assert_eq(b->rsdp_gpa % 16, 0, "legacy scan needs 16-byte alignment");
	cr_assert_eq(memcmp(r->signature, "RSD PTR ", 8), 0);
	cr_assert_eq(r->revision, 2);
	cr_assert_eq(le32toh(r->length), 36);
	cr_assert_eq(sum8(r, 20), 0, "ACPI 1.0 checksum");
	cr_assert_eq(sum8(r, 36), 0, "extended checksum");
	return r;
}

static uint64_t xsdt_entry(const struct acpi_header *xsdt, unsigned int i)
{
	uint64_t v;

	memcpy(&v, (const uint8_t *)(xsdt + 1) + 8 * i, 8);
	return le64toh(v);
}

static const struct acpi_header *xsdt(const struct built *b)
{
	return table(b, le64toh(rsdp(b)->xsdt_address), "XSDT");
}

/* The table the XSDT lists with signature sig (exactly once). */
static const struct acpi_header *find(const struct built *b, const char *sig)
{
	const struct acpi_header *x = xsdt(b), *found = NULL;
	unsigned int n = (le32toh(x->length) - sizeof(*x)) / 8;

	for (unsigned int i = 0; i < n; i++) {
		const struct acpi_header *h = (const void *)at(b, xsdt_entry(x, i), sizeof(*h));
		if (memcmp(h->signature, sig, 4) == 0) {
			cr_assert_null(found, "%s listed twice", sig);
			found = table(b, xsdt_entry(x, i), sig);
		}
	}
	cr_assert_not_null(found, "%s not in the XSDT", sig);
	return found;
}

static const struct acpi_fadt *fadt(const struct built *b)
{
	return (const void *)find(b, "FACP");
}

static const struct acpi_header *dsdt(const struct built *b)
{
	const struct acpi_fadt *f = fadt(b);

	cr_assert_eq(le32toh(f->dsdt), le64toh(f->x_dsdt), "32- and 64-bit DSDT pointers agree");
	return table(b, le64toh(f->x_dsdt), "DSDT");
}

Test(acpi, rsdp_and_xsdt)
{
	struct acpi_config cfg = test_config(1);
	struct built b = build(&cfg, TABLES_GPA);
	const struct acpi_rsdp *r = rsdp(&b);
	const struct acpi_header *x = xsdt(&b);

	cr_assert_eq(b.rsdp_gpa, TABLES_GPA, "RSDP first, so the BIOS-area scan finds it at once");
	cr_assert_eq(memcmp(r->oem_id, "MOAT  ", 6), 0);
	cr_assert_eq(x->revision, 1);
	cr_assert_eq(le32toh(x->length), sizeof(*x) + 3 * 8, "FACP, APIC and MCFG");
	cr_assert_eq(memcmp(at(&b, xsdt_entry(x, 0), 4), "FACP", 4), 0);
	cr_assert_eq(memcmp(at(&b, xsdt_entry(x, 1), 4), "APIC", 4), 0);
	cr_assert_eq(memcmp(at(&b, xsdt_entry(x, 2), 4), "MCFG", 4), 0);
	free(b.buf);
}

Test(acpi, mcfg_describes_bus_0_and_goes_without_pci)
{
	struct acpi_config cfg = test_config(1);
	struct built b = build(&cfg, TABLES_GPA);
	const struct acpi_header *h = find(&b, "MCFG");
	const struct acpi_mcfg_alloc *al = (const void *)((const uint8_t *)h + sizeof(struct acpi_mcfg));

	cr_assert_eq(le32toh(h->length), sizeof(struct acpi_mcfg) + sizeof(*al));
	cr_assert_eq(le64toh(al->base_address), X86_PCI_ECAM_START);
	cr_assert_eq(al->segment, 0);
	cr_assert_eq(al->start_bus, 0);
	cr_assert_eq(al->end_bus, 0);
	free(b.buf);

	/* No PCI: no MCFG, and the XSDT lists only what exists. */
	cfg.pci_ecam_base = 0;
	b = build(&cfg, TABLES_GPA);
	const struct acpi_header *x = xsdt(&b);
	cr_assert_eq(le32toh(x->length), sizeof(*x) + 2 * 8);
	free(b.buf);
}

Test(acpi, rsdp_aligned_when_buffer_is_not)
{
	struct acpi_config cfg = test_config(2);
	struct built b = build(&cfg, TABLES_GPA + 4);

	cr_assert_eq(b.rsdp_gpa, TABLES_GPA + 16);
	rsdp(&b);
	dsdt(&b);
	find(&b, "APIC");
	free(b.buf);
}

Test(acpi, tables_above_4g_use_64bit_pointers_only)
{
	struct acpi_config cfg = test_config(1);
	struct built b = build(&cfg, 0x100000000ull);
	const struct acpi_fadt *f = fadt(&b);

	cr_assert_eq(f->dsdt, 0, "no truncated 32-bit DSDT pointer");
	table(&b, le64toh(f->x_dsdt), "DSDT");
	free(b.buf);
}

Test(acpi, fadt)
{
	struct acpi_config cfg = test_config(1);
	struct built b = build(&cfg, TABLES_GPA);
	const struct acpi_fadt *f = fadt(&b);
	uint32_t flags = le32toh(f->flags);
	uint16_t boot = le16toh(f->iapc_boot_arch);

	cr_assert_eq(le32toh(f->header.length), 276);
	cr_assert_eq(f->header.revision, 6);
	cr_assert_eq(f->minor_version, 3);
	cr_assert(flags & (1u << 20), "HW_REDUCED_ACPI");
	cr_assert(flags & (1u << 10), "RESET_REG_SUP");
	cr_assert_eq(boot & ((1u << 0) | (1u << 1)), 0, "no legacy devices, no 8042");
	cr_assert(boot & (1u << 2), "VGA not present");
	cr_assert(boot & (1u << 5), "CMOS RTC not present");
	cr_assert_eq(f->sci_int, 0);
	cr_assert_eq(f->pm1a_cnt_blk, 0);
	cr_assert_eq(f->x_pm1a_cnt_blk.address, 0);

	const struct { const struct acpi_gas *gas; uint16_t port; } regs[] = {
		{ &f->reset_reg, X86_PM_RESET },
		{ &f->sleep_control_reg, X86_PM_SLEEP_CTL },
		{ &f->sleep_status_reg, X86_PM_SLEEP_STS },
	};
	for (size_t i = 0; i < 3; i++) {
		cr_assert_eq(regs[i].gas->space_id, 1, "SystemIO");
		cr_assert_eq(regs[i].gas->bit_width, 8);
		cr_assert_eq(regs[i].gas->bit_offset, 0);
		cr_assert_eq(regs[i].gas->access_size, 1, "byte access");
		cr_assert_eq(le64toh(regs[i].gas->address), regs[i].port);
	}
	cr_assert_eq(f->reset_value, X86_PM_RESET_VALUE);

	/* The DSDT the FADT points to is complete AML following the header. */
	const struct acpi_header *d = dsdt(&b);
	cr_assert_eq(d->revision, 2, "64-bit integers");
	cr_assert_gt(le32toh(d->length), sizeof(*d));
	free(b.buf);
}

static void check_madt(unsigned int ncpus)
{
	struct acpi_config cfg = test_config(ncpus);
	struct built b = build(&cfg, TABLES_GPA);
	const struct acpi_madt *m = (const void *)find(&b, "APIC");
	uint32_t len = le32toh(m->header.length);
	const uint8_t *p = (const uint8_t *)(m + 1), *end = (const uint8_t *)m + len;
	unsigned int nlapic = 0, nioapic = 0;
	uint32_t seen = 0;

	cr_assert_eq(le32toh(m->lapic_address), X86_LAPIC_ADDR);
	cr_assert_eq(len, sizeof(*m) + 8 * ncpus + 12);
	while (p < end) {
		const struct acpi_madt_entry *e = (const void *)p;
		cr_assert_geq(end - p, 2);
		cr_assert_geq(e->length, 2);
		cr_assert_leq(e->length, end - p, "entry runs past the table");
		if (e->type == ACPI_MADT_TYPE_LAPIC) {
			const struct acpi_madt_lapic *l = (const void *)p;
			cr_assert_eq(l->length, 8);
			cr_assert_eq(l->processor_uid, l->apic_id);
			cr_assert_lt(l->apic_id, ncpus);
			cr_assert_eq(le32toh(l->flags) & 1, 1, "enabled");
			cr_assert_eq(seen & (1u << l->apic_id), 0, "APIC id %u twice", l->apic_id);
			seen |= 1u << l->apic_id;
			nlapic++;
		} else if (e->type == ACPI_MADT_TYPE_IOAPIC) {
			const struct acpi_madt_ioapic *io = (const void *)p;
			cr_assert_eq(io->length, 12);
			cr_assert_eq(io->ioapic_id, ncpus);
			cr_assert_eq(le32toh(io->address), X86_IOAPIC_ADDR);
			cr_assert_eq(le32toh(io->gsi_base), 0);
			nioapic++;
		} else {
			cr_assert_fail("unexpected MADT entry type %u (no interrupt source overrides)", e->type);
		}
		p += e->length;
	}
	cr_assert_eq(nlapic, ncpus);
	cr_assert_eq(nioapic, 1);
	free(b.buf);
}

Test(acpi, madt_1_cpu) { check_madt(1); }
Test(acpi, madt_2_cpus) { check_madt(2); }
Test(acpi, madt_8_cpus) { check_madt(8); }

static const uint8_t *memmem_str(const uint8_t *hay, size_t len, const char *needle)
{
	return memmem(hay, len, needle, strlen(needle));
}

Test(acpi, dsdt_content)
{
	struct acpi_config cfg = test_config(1);
	struct built b = build(&cfg, TABLES_GPA);
	const struct acpi_header *d = dsdt(&b);
	const uint8_t *aml = (const uint8_t *)d;
	size_t len = le32toh(d->length);
	const uint8_t *s5;

	cr_assert_not_null(memmem_str(aml, len, "QEMU0001"));
	cr_assert_not_null(memmem(aml, len, (const uint8_t[]){ 0x0c, 0x41, 0xd0, 0x05, 0x01 }, 5),
			   "EisaId(PNP0501)");
	/* Name(\_S5_, Package(){ 5, 0 }) */
	s5 = memmem_str(aml, len, "\\_S5_");
	cr_assert_not_null(s5);
	cr_assert_eq(s5[-1], 0x08, "NameOp");
	cr_assert_eq(memcmp(s5 + 5, (const uint8_t[]){ 0x12, 0x05, 0x02, 0x0a, X86_S5_SLP_TYP, 0x00 }, 6), 0);
	free(b.buf);
}

Test(acpi, too_small_buffer_is_enospc_and_untouched_past_end)
{
	struct acpi_config cfg = test_config(8);
	struct built b = build(&cfg, TABLES_GPA);
	enum { GUARD = 256 };

	for (size_t len = 0; len < (size_t)b.used; len++) {
		uint8_t *buf = malloc(len + GUARD);
		uint64_t rsdp_gpa = 0xdead;

		cr_assert_not_null(buf);
		memset(buf, 0xa5, len + GUARD);
		cr_assert_eq(acpi_build_tables(&cfg, buf, len, TABLES_GPA, &rsdp_gpa), -ENOSPC,
			     "len %zu of %ld", len, b.used);
		for (size_t i = len; i < len + GUARD; i++)
			cr_assert_eq(buf[i], 0xa5, "len %zu: byte %zu written", len, i);
		free(buf);
	}

	/* Exactly enough is enough, and gives the same bytes. */
	uint8_t *exact = malloc((size_t)b.used);
	uint64_t rsdp_gpa;
	cr_assert_not_null(exact);
	cr_assert_eq(acpi_build_tables(&cfg, exact, (size_t)b.used, TABLES_GPA, &rsdp_gpa), b.used);
	cr_assert_eq(memcmp(exact, b.buf, (size_t)b.used), 0);
	free(exact);
	free(b.buf);
}

Test(acpi, bad_config_is_einval)
{
	uint8_t buf[4096];
	uint64_t r;
	struct acpi_config cfg;

#define EXPECT_EINVAL(field, value)                                                     \
	do {                                                                            \
		cfg = test_config(2);                                                   \
		cfg.field = value;                                                      \
		cr_assert_eq(acpi_build_tables(&cfg, buf, sizeof(buf), TABLES_GPA, &r), \
			     -EINVAL, #field " = " #value);                             \
	} while (0)

	EXPECT_EINVAL(ncpus, 0);
	EXPECT_EINVAL(ncpus, 256);
	EXPECT_EINVAL(ioapic_id, 1);   /* collides with LAPIC id 1 */
	EXPECT_EINVAL(uart_irq, 16);
	EXPECT_EINVAL(s5_slp_typ, 8);
	EXPECT_EINVAL(sleep_ctl_port, 0);
	EXPECT_EINVAL(reset_port, 0);
	cfg = test_config(2);
	cr_assert_eq(acpi_build_tables(NULL, buf, sizeof(buf), TABLES_GPA, &r), -EINVAL);
	cr_assert_eq(acpi_build_tables(&cfg, buf, sizeof(buf), TABLES_GPA, NULL), -EINVAL);
	cfg.ncpus = 255;
	cfg.ioapic_id = 255;
	cr_assert_gt(acpi_build_tables(&cfg, buf, sizeof(buf), TABLES_GPA, &r), 0, "255 CPUs fit");
}

/* ---- Round trip through ACPICA's disassembler (Debian package acpica-tools). ---- */

struct iasl_run {
	char dir[64];
	char out[16384];   /* iasl's stdout+stderr */
	char dsl[65536];   /* the disassembly */
	int status;
};

/* Called first in each test, before anything is allocated, so a missing iasl is one clear failure. */
static void require_iasl(void)
{
	if (system("command -v iasl >/dev/null 2>&1") != 0)
		cr_assert_fail("iasl not found: install acpica-tools (apt-get install -y acpica-tools, "
			"or tools/install-deps.sh)");
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f, "%s", path);
	cr_assert_eq(fwrite(data, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
}

static size_t read_file(const char *path, char *out, size_t cap)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	cr_assert_not_null(f, "%s missing", path);
	n = fread(out, 1, cap - 1, f);
	out[n] = 0;
	fclose(f);
	return n;
}

/* A fresh temp dir holding name with the given bytes. */
static void iasl_setup(struct iasl_run *r, const char *name, const void *data, size_t len)
{
	char path[128];

	strcpy(r->dir, "/tmp/moat-acpi-XXXXXX");
	cr_assert_not_null(mkdtemp(r->dir));
	snprintf(path, sizeof(path), "%s/%s", r->dir, name);
	write_file(path, data, len);
}

/* Runs "iasl <args>" in the temp dir, collecting its output; true if it exited 0. */
static bool iasl(struct iasl_run *r, const char *args)
{
	char cmd[256];
	FILE *p;
	size_t n = 0;

	snprintf(cmd, sizeof(cmd), "cd %s && iasl %s 2>&1", r->dir, args);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	while (n < sizeof(r->out) - 1) {
		size_t got = fread(r->out + n, 1, sizeof(r->out) - 1 - n, p);
		if (!got)
			break;
		n += got;
	}
	r->out[n] = 0;
	r->status = pclose(p);
	return WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0;
}

static void iasl_cleanup(struct iasl_run *r)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", r->dir);
	cr_assert_eq(system(cmd), 0);
}

static void disassemble(struct iasl_run *r, const struct acpi_header *h, const char *base)
{
	char name[32], args[48], path[128];
	static const char *const complaints[] = {
		"Warning", "Error", "checksum", "Invalid", "too long", "does not contain",
		"terminates", "****",
	};

	snprintf(name, sizeof(name), "%s.dat", base);
	iasl_setup(r, name, h, le32toh(h->length));
	snprintf(args, sizeof(args), "-d %s", name);
	cr_assert(iasl(r, args), "iasl -d failed:\n%s", r->out);
	snprintf(path, sizeof(path), "%s/%s.dsl", r->dir, base);
	read_file(path, r->dsl, sizeof(r->dsl));
	for (size_t i = 0; i < sizeof(complaints) / sizeof(complaints[0]); i++) {
		cr_assert_null(strstr(r->out, complaints[i]), "iasl says \"%s\":\n%s", complaints[i], r->out);
		cr_assert_null(strstr(r->dsl, complaints[i]), "disassembly says \"%s\":\n%s", complaints[i],
			       r->dsl);
	}
}

Test(acpi_iasl, dsdt_disassembles)
{
	require_iasl();

	struct acpi_config cfg = test_config(2);
	struct built b = build(&cfg, TABLES_GPA);
	struct iasl_run *r = calloc(1, sizeof(*r));

	cr_assert_not_null(r);
	disassemble(r, dsdt(&b), "dsdt");
	cr_assert_not_null(strstr(r->dsl, "EisaId (\"PNP0501\")"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "\"QEMU0001\""), "%s", r->dsl);
	/* The disassembler drops trailing '_' padding: \_S5_ prints as \_S5. */
	cr_assert_not_null(strstr(r->dsl, "Name (\\_S5, Package (0x02)"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "_S5_"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "ResourceTemplate ()"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "IO (Decode16,"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "0x03F8,"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "0x0505,"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "IRQNoFlags ()"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "{4}"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "Method (_STA, 0, NotSerialized)"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "Return (0x0F)"), "%s", r->dsl);
	/* The PCIe host bridge with its window, and ECAM reserved as a motherboard resource. */
	cr_assert_not_null(strstr(r->dsl, "EisaId (\"PNP0A08\")"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "EisaId (\"PNP0A03\")"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "WordBusNumber (ResourceProducer"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "0xC0000000,"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "0xDFFFFFFF,"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "WordIO (ResourceProducer"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "0x1FFF,"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "EisaId (\"PNP0C02\")"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "Memory32Fixed (ReadOnly"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "0xE0000000,"), "%s", r->dsl);
	iasl_cleanup(r);
	free(r);
	free(b.buf);
}

/*
 * Recompile the disassembly without optimisations: iasl must produce our AML byte for
 * byte, except the header's creator fields and the EndTag checksums (iasl writes 0,
 * "ignore"; we write the real checksum, which the spec equally allows).
 */
Test(acpi_iasl, dsdt_recompiles_to_same_aml)
{
	require_iasl();

	struct acpi_config cfg = test_config(2);
	struct built b = build(&cfg, TABLES_GPA);
	const struct acpi_header *d = dsdt(&b);
	const uint8_t *ours = (const uint8_t *)d;
	size_t len = le32toh(d->length);
	struct iasl_run *r = calloc(1, sizeof(*r));
	char path[128];
	uint8_t *theirs = malloc(len + 1);

	cr_assert(r && theirs);
	disassemble(r, d, "dsdt");
	cr_assert(iasl(r, "-oa -p re dsdt.dsl"), "iasl failed to recompile:\n%s", r->out);
	snprintf(path, sizeof(path), "%s/re.aml", r->dir);
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f);
	cr_assert_eq(fread(theirs, 1, len + 1, f), len, "recompiled length differs");
	fclose(f);
	for (size_t i = sizeof(struct acpi_header); i < len; i++) {
		if (ours[i] == theirs[i])
			continue;
		cr_assert(ours[i - 1] == 0x79 && theirs[i - 1] == 0x79 && theirs[i] == 0,
			  "byte %zu: ours 0x%02x, iasl 0x%02x", i, ours[i], theirs[i]);
	}
	iasl_cleanup(r);
	free(r);
	free(theirs);
	free(b.buf);
}

Test(acpi_iasl, fadt_madt_xsdt_disassemble_cleanly)
{
	require_iasl();

	struct acpi_config cfg = test_config(8);
	struct built b = build(&cfg, TABLES_GPA);
	struct iasl_run *r = calloc(1, sizeof(*r));

	cr_assert_not_null(r);
	disassemble(r, find(&b, "FACP"), "facp");
	cr_assert_not_null(strstr(r->dsl, "Hardware Reduced (V5) : 1"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "Reset Register Supported (V2) : 1"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "CMOS RTC Not Present (V5) : 1"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "Address : 0000000000000600"), "%s", r->dsl);
	iasl_cleanup(r);

	disassemble(r, find(&b, "APIC"), "apic");
	cr_assert_not_null(strstr(r->dsl, "Local Apic ID : 07"), "%s", r->dsl);
	cr_assert_not_null(strstr(r->dsl, "I/O Apic ID : 08"), "%s", r->dsl);
	cr_assert_null(strstr(r->dsl, "Interrupt Source Override"), "%s", r->dsl);
	iasl_cleanup(r);

	disassemble(r, xsdt(&b), "xsdt");
	iasl_cleanup(r);

	disassemble(r, find(&b, "MCFG"), "mcfg");
	cr_assert_not_null(strstr(r->dsl, "Base Address : 00000000E0000000"), "%s", r->dsl);
	iasl_cleanup(r);
	free(r);
	free(b.buf);
}

Test(acpi, viot_lists_the_iommu_and_its_endpoints)
{
	struct acpi_config cfg = test_config(1);
	struct built b;

	cfg.viot_iommu_bdf = 1 << 3;                              /* 00:01.0 */
	cfg.viot_nranges = 2;
	cfg.viot_ranges[0].bdf_start = cfg.viot_ranges[0].bdf_end = 2 << 3; /* 00:02.0 */
	cfg.viot_ranges[1].bdf_start = 4 << 3;
	cfg.viot_ranges[1].bdf_end = 5 << 3;
	b = build(&cfg, TABLES_GPA);
	const struct acpi_viot *v = (const void *)find(&b, "VIOT");
	cr_assert_eq(le16toh(v->node_count), 3);
	const struct acpi_viot_virtio_iommu_pci *io = (const void *)((const uint8_t *)v + le16toh(v->node_offset));
	cr_assert_eq(io->type, ACPI_VIOT_NODE_VIRTIO_IOMMU_PCI);
	cr_assert_eq(le16toh(io->bdf), 8);
	const struct acpi_viot_pci_range *r = (const void *)(io + 1);
	cr_assert_eq(r[0].type, ACPI_VIOT_NODE_PCI_RANGE);
	cr_assert_eq(le16toh(r[0].bdf_start), 16);
	cr_assert_eq(le32toh(r[0].endpoint_start), 16);
	cr_assert_eq(le16toh(r[1].bdf_end), 40);
	cr_assert_eq(le16toh(r[1].output_node), le16toh(v->node_offset), "ranges point at the IOMMU node");
	cr_assert_eq(le32toh(v->header.length), sizeof(*v) + sizeof(*io) + 2 * sizeof(*r));
	free(b.buf);

	/* The IOMMU translating itself is refused. */
	cfg.viot_ranges[1].bdf_start = 0;
	cr_assert_eq(acpi_build_tables(&cfg, NULL, 0, TABLES_GPA, &(uint64_t){ 0 }), -EINVAL);
}
