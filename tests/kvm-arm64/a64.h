/*
 * Encoders of the few A64 instructions the arm64 host-KVM test guests are written in. Registers are
 * numbers (x0 is 0); offsets are in bytes. Loads and stores use the unsigned-offset form: KVM reports an
 * MMIO access to user space only for a single load or store without writeback (ESR_EL2.ISV set).
 */
#ifndef MOAT_TESTS_A64_H
#define MOAT_TESTS_A64_H

/* movz xd, #imm16, lsl #(16 * hw) */
#define A64_MOVZ(d, imm16, hw) (0xd2800000u | (uint32_t)(hw) << 21 | ((uint32_t)(imm16) & 0xffff) << 5 | (d))
/* movk xd, #imm16, lsl #(16 * hw) */
#define A64_MOVK(d, imm16, hw) (0xf2800000u | (uint32_t)(hw) << 21 | ((uint32_t)(imm16) & 0xffff) << 5 | (d))
/* xd = a 32-bit constant, zero-extended (two words: movz, movk) */
#define A64_MOV32(d, v) A64_MOVZ(d, (v) & 0xffff, 0), A64_MOVK(d, ((v) >> 16) & 0xffff, 1)

/* str/ldr xt, [xn, #off] (off a multiple of 8) */
#define A64_STR_X(t, n, off) (0xf9000000u | (uint32_t)((off) / 8) << 10 | (uint32_t)(n) << 5 | (t))
#define A64_LDR_X(t, n, off) (0xf9400000u | (uint32_t)((off) / 8) << 10 | (uint32_t)(n) << 5 | (t))
/* str/ldr wt, [xn, #off] (off a multiple of 4) */
#define A64_STR_W(t, n, off) (0xb9000000u | (uint32_t)((off) / 4) << 10 | (uint32_t)(n) << 5 | (t))
#define A64_LDR_W(t, n, off) (0xb9400000u | (uint32_t)((off) / 4) << 10 | (uint32_t)(n) << 5 | (t))
/* strb/ldrb wt, [xn, #off] */
#define A64_STRB(t, n, off) (0x39000000u | (uint32_t)(off) << 10 | (uint32_t)(n) << 5 | (t))
#define A64_LDRB(t, n, off) (0x39400000u | (uint32_t)(off) << 10 | (uint32_t)(n) << 5 | (t))

/* b .+off, cbz xt, .+off (off a multiple of 4; negative goes back) */
#define A64_B(off)        (0x14000000u | ((uint32_t)((off) / 4) & 0x3ffffff))
#define A64_CBZ_X(t, off) (0xb4000000u | ((uint32_t)((off) / 4) & 0x7ffff) << 5 | (t))
#define A64_B_SELF        A64_B(0) /* b . */

#define A64_HVC0             0xd4000002u         /* hvc #0: a PSCI call (the conduit KVM gives EL1) */
#define A64_ADR_SELF(d)      (0x10000000u | (d)) /* adr xd, . */
#define A64_MRS_CURRENTEL(t) (0xd5384240u | (t)) /* mrs xt, CurrentEL */
#define A64_MRS_DAIF(t)      (0xd53b4220u | (t)) /* mrs xt, DAIF */
#define A64_MRS_MPIDR(t)     (0xd53800a0u | (t)) /* mrs xt, MPIDR_EL1 */

#endif
