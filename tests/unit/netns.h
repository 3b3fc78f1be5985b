/*
 * Tests that touch real network interfaces run in a network namespace of their own, so
 * nothing they create or send is seen outside it. Criterion forks every test, so the
 * namespace ends with the test.
 */
#ifndef MOAT_TEST_NETNS_H
#define MOAT_TEST_NETNS_H

/* Move this test process into a fresh network namespace, or skip the test (printing why). */
void netns_enter_or_skip(void);

#endif
