/*
 * Minimal AML (ACPI Machine Language) byte-code builder.
 *
 * Writes into a caller-supplied fixed buffer and never past its end. Every emitter
 * returns 0 or -errno, and the first error is sticky: later calls do nothing and
 * return it, so a builder can emit a whole block and check aml_finish() once.
 *
 * Blocks (Scope, Device, Method, Package, Buffer, ResourceTemplate) are opened by
 * their emitter and closed by aml_end(); the PkgLength (and for buffers the size,
 * for packages the element count) is inserted when the block closes, using the
 * shortest encoding.
 *
 *   aml_scope(&a, "\\_SB");
 *     aml_device(&a, "COM1");
 *       aml_name_eisaid(&a, "_HID", "PNP0501");
 *       aml_name(&a, "_CRS");
 *       aml_resource_template(&a);
 *         aml_io(&a, true, 0x3f8, 0x3f8, 1, 8);
 *         aml_irq_noflags(&a, 4);
 *       aml_end(&a);            (appends the EndTag)
 *     aml_end(&a);
 *   aml_end(&a);
 *   err = aml_finish(&a);
 *
 * Integers assume a DefinitionBlock of revision >= 2 (64-bit integers).
 */
#ifndef MOAT_AML_H
#define MOAT_AML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AML_MAX_DEPTH 16
#define AML_PKGLENGTH_MAX ((1u << 28) - 1)

struct aml_block {
	size_t start;        /* where the PkgLength will be inserted */
	unsigned int kind;
	unsigned int count;  /* package elements emitted so far */
};

struct aml {
	uint8_t *buf;
	size_t cap;
	size_t len;
	int err;             /* first error, sticky */
	unsigned int depth;
	struct aml_block open[AML_MAX_DEPTH];
};

void aml_init(struct aml *a, void *buf, size_t cap);
/* The sticky error, or -EINVAL if a block is still open; 0 when the output is complete. */
int aml_finish(const struct aml *a);
static inline size_t aml_len(const struct aml *a) { return a->len; }

/*
 * Pure encoders. aml_pkglength() encodes value as-is (1-4 bytes) and returns the byte
 * count, or -ERANGE above AML_PKGLENGTH_MAX. aml_eisaid_encode() compresses "ABC1234"
 * into the 32-bit EISA id as it is stored in AML (EisaId("PNP0501") == 0x0105D041).
 */
int aml_pkglength(uint8_t out[4], uint32_t value);
int aml_eisaid_encode(const char *id, uint32_t *out);

/* Raw bytes: opcodes not covered here, or the contents of aml_buffer(). */
int aml_raw(struct aml *a, const void *data, size_t len);
/* A NameString: "\\_SB.COM1", "^PCI0", "_HID"; segments shorter than 4 are '_'-padded. */
int aml_namestring(struct aml *a, const char *path);

/* Data objects; inside aml_package() each counts as one element. */
int aml_integer(struct aml *a, uint64_t v);   /* Zero, One, Ones or the smallest prefix form */
int aml_string(struct aml *a, const char *s); /* ASCII 0x01-0x7f */
int aml_eisaid(struct aml *a, const char *id);/* always DWordConst, so disassemblers show EisaId() */

/* Name(name, value): aml_name() emits NameOp + NameString; the caller emits the value. */
int aml_name(struct aml *a, const char *name);
int aml_name_integer(struct aml *a, const char *name, uint64_t v);
int aml_name_string(struct aml *a, const char *name, const char *s);
int aml_name_eisaid(struct aml *a, const char *name, const char *id);

/* Blocks, each closed by aml_end(). */
int aml_scope(struct aml *a, const char *path);
int aml_device(struct aml *a, const char *name);
int aml_method(struct aml *a, const char *name, unsigned int nargs, bool serialized);
int aml_package(struct aml *a);              /* up to 255 elements */
int aml_buffer(struct aml *a);               /* fill with aml_raw() */
int aml_resource_template(struct aml *a);    /* fill with the descriptors below */
int aml_end(struct aml *a);

/* Return(v) inside a method. */
int aml_return_integer(struct aml *a, uint64_t v);

/* Resource descriptors, only inside aml_resource_template(). */
int aml_io(struct aml *a, bool decode16, uint16_t min, uint16_t max, uint8_t align, uint8_t len);
int aml_irq_noflags(struct aml *a, unsigned int irq);   /* ISA IRQ 0-15: edge, active high */

#define AML_EXT_IRQ_CONSUMER   (1u << 0)
#define AML_EXT_IRQ_EDGE       (1u << 1)   /* else level */
#define AML_EXT_IRQ_ACTIVE_LOW (1u << 2)   /* else active high */
#define AML_EXT_IRQ_SHARED     (1u << 3)
#define AML_EXT_IRQ_WAKE       (1u << 4)
int aml_ext_irq(struct aml *a, unsigned int flags, uint32_t gsi);

int aml_memory32_fixed(struct aml *a, bool rw, uint32_t base, uint32_t len);

/* Address space descriptors (WordBusNumber, DWordMemory, QWordMemory, WordIO, ...). */
#define AML_ADDR_MEMORY 0
#define AML_ADDR_IO     1
#define AML_ADDR_BUS    2
/* General flags */
#define AML_ADDR_CONSUMER    (1u << 0)     /* else ResourceProducer, as for a host bridge window */
#define AML_ADDR_SUBTRACTIVE (1u << 1)
#define AML_ADDR_MIN_FIXED   (1u << 2)
#define AML_ADDR_MAX_FIXED   (1u << 3)
/* Type-specific flags for AML_ADDR_MEMORY */
#define AML_MEM_RW           (1u << 0)
#define AML_MEM_NONCACHEABLE (0u << 1)
#define AML_MEM_CACHEABLE    (1u << 1)
#define AML_MEM_WRITECOMBINE (2u << 1)
#define AML_MEM_PREFETCHABLE (3u << 1)
/* Type-specific flags for AML_ADDR_IO */
#define AML_IO_ENTIRE_RANGE  (3u << 0)

struct aml_addr_space {
	uint8_t type;          /* AML_ADDR_* */
	uint8_t flags;         /* general flags */
	uint8_t type_flags;    /* type-specific flags */
	uint64_t granularity;
	uint64_t min;
	uint64_t max;
	uint64_t translation;
	uint64_t length;
};
/* -ERANGE if a field does not fit the descriptor's width. */
int aml_word_addr(struct aml *a, const struct aml_addr_space *s);
int aml_dword_addr(struct aml *a, const struct aml_addr_space *s);
int aml_qword_addr(struct aml *a, const struct aml_addr_space *s);

#endif
