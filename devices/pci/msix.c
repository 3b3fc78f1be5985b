#include "devices/pci/msix.h"

#include <errno.h>
#include <string.h>

#define MSIX_CAP_FLAGS 2 /* message control, within the capability */

static bool vec_live(const struct msix *m, unsigned int v)
{
	return m->enabled && !m->maskall && !(m->table[v].ctrl & MSIX_CTRL_MASKED);
}

static uint64_t entry_addr(const struct msix_entry *e)
{
	return (uint64_t)e->addr_hi << 32 | e->addr_lo;
}

/* Make vector v's route match its table entry and mask state, then send what was pending. */
static void vec_sync(struct msix *m, unsigned int v)
{
	const struct msix_entry *e = &m->table[v];
	bool live = vec_live(m, v), was = m->routed & (1ull << v);

	if (live && (!was || memcmp(&m->routed_as[v], e, sizeof(*e)) != 0)) {
		if (m->ops->route(m->ctx, v, entry_addr(e), e->data, true) == 0) {
			m->routed |= 1ull << v;
			m->routed_as[v] = *e;
		}
	} else if (!live && was) {
		(void)m->ops->route(m->ctx, v, 0, 0, false);
		m->routed &= ~(1ull << v);
	}
	if (live && (m->pending & (1ull << v)) && (m->routed & (1ull << v))) {
		m->pending &= ~(1ull << v);
		(void)m->ops->fire(m->ctx, v);
	}
}

static void sync_all(struct msix *m)
{
	for (unsigned int v = 0; v < m->nvec; v++)
		vec_sync(m, v);
}

int msix_init(struct msix *m, struct pci_device *pd, unsigned int nvec, unsigned int bar, uint32_t table_off,
	      uint32_t pba_off, const struct msix_ops *ops, void *ctx)
{
	uint8_t body[10];
	uint16_t flags = (uint16_t)(nvec - 1);
	uint32_t table = table_off | bar, pba = pba_off | bar;
	int off;

	if (!nvec || nvec > MSIX_MAX_VECTORS || bar >= PCI_NUM_BARS || (table_off & 7) || (pba_off & 7) || !ops ||
	    !ops->route || !ops->fire)
		return -EINVAL;
	memset(m, 0, sizeof(*m));
	memcpy(body, &flags, 2);
	memcpy(body + 2, &table, 4);
	memcpy(body + 6, &pba, 4);
	off = pci_device_add_cap(pd, PCI_CAP_ID_MSIX, body, 12);
	if (off < 0)
		return off;
	/* Only Enable and Function Mask are writable. */
	pci_wmask_set(pd, (uint32_t)off + MSIX_CAP_FLAGS, MSIX_FLAGS_ENABLE | MSIX_FLAGS_MASKALL, 2);
	m->pd = pd;
	m->cap = (uint8_t)off;
	m->nvec = nvec;
	m->ops = ops;
	m->ctx = ctx;
	for (unsigned int v = 0; v < nvec; v++)
		m->table[v].ctrl = MSIX_CTRL_MASKED;
	return 0;
}

bool msix_enabled(const struct msix *m)
{
	return m->enabled;
}

void msix_reset(struct msix *m)
{
	m->enabled = m->maskall = false;
	m->pending = 0;
	for (unsigned int v = 0; v < m->nvec; v++) {
		memset(&m->table[v], 0, sizeof(m->table[v]));
		m->table[v].ctrl = MSIX_CTRL_MASKED;
	}
	sync_all(m);
	pci_cfg_set(m->pd, m->cap + MSIX_CAP_FLAGS, m->nvec - 1, 2);
}

void msix_config_written(struct msix *m, uint32_t off, unsigned int size)
{
	uint16_t flags;

	if (off + size <= (uint32_t)m->cap + MSIX_CAP_FLAGS || off >= (uint32_t)m->cap + MSIX_CAP_FLAGS + 2)
		return;
	flags = (uint16_t)pci_cfg_get(m->pd, m->cap + MSIX_CAP_FLAGS, 2);
	m->enabled = flags & MSIX_FLAGS_ENABLE;
	m->maskall = flags & MSIX_FLAGS_MASKALL;
	sync_all(m);
}

/* GUEST: off and size are guest-controlled: only aligned dword (or qword) accesses inside the table count. */
static bool table_access(const struct msix *m, uint64_t off, unsigned int size)
{
	return (size == 4 || size == 8) && !(off & (size - 1)) && off < (uint64_t)m->nvec * MSIX_ENTRY_SIZE;
}

void msix_table_read(struct msix *m, uint64_t off, void *data, unsigned int size)
{
	uint32_t w[2];

	if (!table_access(m, off, size)) {
		memset(data, 0, size > 8 ? 8 : size);
		return;
	}
	for (unsigned int i = 0; i < size / 4; i++) {
		uint64_t o = off + 4 * i;
		const uint32_t *e = (const uint32_t *)&m->table[o / MSIX_ENTRY_SIZE];

		w[i] = e[(o % MSIX_ENTRY_SIZE) / 4];
	}
	memcpy(data, w, size);
}

void msix_table_write(struct msix *m, uint64_t off, const void *data, unsigned int size)
{
	uint32_t w[2];
	unsigned int v = (unsigned int)(off / MSIX_ENTRY_SIZE);

	if (!table_access(m, off, size))
		return;
	memcpy(w, data, size);
	for (unsigned int i = 0; i < size / 4; i++) {
		uint64_t o = off + 4 * i;
		uint32_t *e = (uint32_t *)&m->table[o / MSIX_ENTRY_SIZE];
		unsigned int word = (unsigned int)(o % MSIX_ENTRY_SIZE) / 4;

		/* Vector control: only the mask bit exists. */
		e[word] = word == 3 ? (w[i] & MSIX_CTRL_MASKED) : w[i];
	}
	vec_sync(m, v);
}

void msix_pba_read(struct msix *m, uint64_t off, void *data, unsigned int size)
{
	uint64_t bits = m->pending;

	memset(data, 0, size > 8 ? 8 : size);
	if ((size == 4 || size == 8) && off + size <= 8 && !(off & (size - 1)))
		memcpy(data, (const uint8_t *)&bits + off, size);
}

int msix_notify(struct msix *m, unsigned int vec)
{
	if (vec >= m->nvec)
		return -EINVAL;
	if (vec_live(m, vec) && (m->routed & (1ull << vec)))
		return m->ops->fire(m->ctx, vec);
	m->pending |= 1ull << vec;
	return 0;
}
