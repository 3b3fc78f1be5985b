#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "vmm/cli.h"

static int parse(const char *const *args, int n, struct vm_config *cfg, enum cli_action *act, char *err)
{
	char *argv[32];

	argv[0] = (char *)"moat";
	for (int i = 0; i < n; i++)
		argv[i + 1] = (char *)args[i];
	return cli_parse(n + 1, argv, cfg, act, err, 256);
}

#define PARSE(cfg, act, err, ...)                                                                    \
	({                                                                                           \
		static const char *const a_[] = { __VA_ARGS__ };                                     \
		parse(a_, (int)(sizeof(a_) / sizeof(a_[0])), (cfg), (act), (err));                  \
	})

Test(cli, defaults)
{
	struct vm_config c;
	enum cli_action a;
	char err[256];

	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k"), 0, "%s", err);
	cr_assert_eq(a, CLI_RUN);
	cr_assert_str_eq(c.kernel, "/k");
	cr_assert_null(c.initrd);
	cr_assert_str_eq(c.cmdline, MOAT_DEFAULT_CMDLINE);
	cr_assert_eq(c.cpus, 1);
	cr_assert_eq(c.mem_size, 512ull << 20);
	cr_assert_eq(c.console, CONSOLE_STDIO);
	cr_assert_eq(c.timeout_s, 0);
	cr_assert_eq(c.log_level, LOG_WARN);
}

Test(cli, all_options_both_spellings)
{
	struct vm_config c;
	enum cli_action a;
	char err[256];

	cr_assert_eq(PARSE(&c, &a, err, "--kernel=/k", "--initrd", "/i", "--cmdline=console=ttyS0 quiet",
			   "--cpus", "2", "--memory=2G", "--console", "file:/tmp/c.log", "--timeout=30",
			   "--log-level", "debug"),
		     0, "%s", err);
	cr_assert_str_eq(c.kernel, "/k");
	cr_assert_str_eq(c.initrd, "/i");
	cr_assert_str_eq(c.cmdline, "console=ttyS0 quiet");
	cr_assert_eq(c.cpus, 2);
	cr_assert_eq(c.mem_size, 2ull << 30);
	cr_assert_eq(c.console, CONSOLE_FILE);
	cr_assert_str_eq(c.console_path, "/tmp/c.log");
	cr_assert_eq(c.timeout_s, 30);
	cr_assert_eq(c.log_level, LOG_DEBUG);
}

Test(cli, help_and_version)
{
	struct vm_config c;
	enum cli_action a;
	char err[256];

	cr_assert_eq(PARSE(&c, &a, err, "--help"), 0);
	cr_assert_eq(a, CLI_HELP);
	cr_assert_eq(PARSE(&c, &a, err, "-V"), 0);
	cr_assert_eq(a, CLI_VERSION);
	cr_assert(strstr(cli_usage(), "124"), "exit statuses are documented in --help");
	cr_assert(strstr(cli_usage(), "--timeout"));
}

struct bad_case {
	const char *args[4];
	int n;
	const char *msg; /* the message must name this */
};

static void check_bad_cases(const struct bad_case *cases, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		struct vm_config c;
		enum cli_action a;
		char err[256] = "";
		int r = parse(cases[i].args, cases[i].n, &c, &a, err);

		cr_assert_neq(r, 0, "case %u should fail", i);
		cr_assert(strstr(err, cases[i].msg), "case %u: message '%s' should mention '%s'", i, err,
			  cases[i].msg);
	}
}

Test(cli, bad_values_name_the_problem)
{
	static const struct bad_case cases[] = {
		{ { "--cpus", "2" }, 2, "--kernel" },
		{ { "--kernel", "/k", "--cpus", "0" }, 4, "--cpus" },
		{ { "--kernel", "/k", "--cpus", "65" }, 4, "--cpus" },
		{ { "--kernel", "/k", "--cpus", "2x" }, 4, "--cpus" },
		{ { "--kernel", "/k", "--cpus", "-1" }, 4, "--cpus" },
		{ { "--kernel", "/k", "--memory", "lots" }, 4, "--memory" },
		{ { "--kernel", "/k", "--memory", "1M" }, 4, "32M" },
		{ { "--kernel", "/k", "--memory", "99999999999T" }, 4, "too large" },
		{ { "--kernel", "/k", "--console", "tty" }, 4, "--console" },
		{ { "--kernel", "/k", "--console", "file:" }, 4, "--console" },
		{ { "--kernel", "/k", "--timeout", "0" }, 4, "--timeout" },
		{ { "--kernel", "/k", "--timeout", "1.5" }, 4, "--timeout" },
		{ { "--kernel", "/k", "--log-level", "loud" }, 4, "--log-level" },
		{ { "--kernel", "/k", "--frobnicate" }, 3, "--frobnicate" },
		{ { "--kernel", "/k", "stray" }, 3, "stray" },
		{ { "--kernel" }, 1, "needs a value" },
		{ { "--kernel", "" }, 2, "--kernel" },
	};

	check_bad_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

Test(cli, seccomp_defaults_to_on)
{
	struct vm_config c;
	enum cli_action a;
	char err[256];

	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k"), 0, "%s", err);
	cr_assert_eq(c.seccomp, SECCOMP_KILL);
	cr_assert(strstr(cli_usage(), "--seccomp"), "--seccomp is documented in --help");
}

Test(cli, seccomp_modes_both_spellings)
{
	struct vm_config c;
	enum cli_action a;
	char err[256];

	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k", "--seccomp", "log"), 0, "%s", err);
	cr_assert_eq(c.seccomp, SECCOMP_LOG);
	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k", "--seccomp=off"), 0, "%s", err);
	cr_assert_eq(c.seccomp, SECCOMP_OFF);
	cr_assert_eq(PARSE(&c, &a, err, "--seccomp", "on", "--kernel", "/k"), 0, "%s", err);
	cr_assert_eq(c.seccomp, SECCOMP_KILL);
}

Test(cli, seccomp_bad_value_names_the_problem)
{
	static const struct bad_case cases[] = {
		{ { "--kernel", "/k", "--seccomp", "yes" }, 4, "--seccomp 'yes' is not one of on, log, off" },
		{ { "--kernel", "/k", "--seccomp", "" }, 4, "--seccomp" },
		{ { "--kernel", "/k", "--seccomp" }, 3, "needs a value" },
	};

	check_bad_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

Test(cli, user_uid_and_gid)
{
	struct vm_config c;
	enum cli_action a;
	char err[256];

	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k"), 0, "%s", err);
	cr_assert_not(c.switch_user, "no --user: moat stays who it is");
	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k", "--user", "65534"), 0, "%s", err);
	cr_assert(c.switch_user);
	cr_assert_eq(c.uid, 65534);
	cr_assert_not(c.gid_given);
	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k", "--user=1000:100"), 0, "%s", err);
	cr_assert_eq(c.uid, 1000);
	cr_assert_eq(c.gid, 100);
	cr_assert(c.gid_given);
	static const char *const bad[] = { "nobody", "-1", "1000:", ":5", "1:2:3", "1x", "4294967295" };
	for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *args[] = { "--kernel", "/k", "--user", bad[i] };
		cr_assert_neq(parse(args, 4, &c, &a, err), 0, "'%s' accepted", bad[i]);
		cr_assert(strstr(err, "--user"), "message '%s' names the flag", err);
	}
}

Test(cli, jail_dir_both_spellings)
{
	struct vm_config c;
	enum cli_action a;
	char err[256];

	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k"), 0, "%s", err);
	cr_assert_null(c.jail, "no --jail: no jail");
	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k", "--jail", "/var/empty"), 0, "%s", err);
	cr_assert_str_eq(c.jail, "/var/empty");
	cr_assert_eq(PARSE(&c, &a, err, "--jail=rel/dir", "--kernel", "/k", "--user", "65534"), 0, "%s", err);
	cr_assert_str_eq(c.jail, "rel/dir");
	cr_assert(c.switch_user, "--jail combines with --user");
	cr_assert(strstr(cli_usage(), "--jail DIR"), "--jail is documented in --help");
}

Test(cli, jail_needs_a_directory)
{
	static const struct bad_case cases[] = {
		{ { "--kernel", "/k", "--jail" }, 3, "--jail needs a value" },
		{ { "--kernel", "/k", "--jail=" }, 3, "--jail needs a directory" },
		{ { "--kernel", "/k", "--jail", "" }, 4, "--jail needs a directory" },
	};

	check_bad_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

Test(cli, devices)
{
	struct vm_config c;
	enum cli_action a;
	char err[256];

	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k"), 0, "%s", err);
	cr_assert_eq(c.ndisks + c.nnets, 0);
	cr_assert_not(c.rng);
	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k", "--disk", "path=/a.img", "--disk=path=/b.img,readonly=on",
			   "--net", "tap=auto,host-ip=10.0.2.1/24", "--rng", "--net=tap=tap7"),
		     0, "%s", err);
	cr_assert_eq(c.ndisks, 2);
	cr_assert_str_eq(c.disks[0].path, "/a.img");
	cr_assert_not(c.disks[0].readonly);
	cr_assert_str_eq(c.disks[1].path, "/b.img");
	cr_assert(c.disks[1].readonly);
	cr_assert_eq(c.nnets, 2);
	cr_assert(c.nets[0].tap_auto);
	cr_assert(c.nets[0].has_host_ip);
	cr_assert_str_eq(c.nets[1].tap, "tap7");
	cr_assert(c.rng);
}

Test(cli, device_errors_name_the_option)
{
	static const struct bad_case cases[] = {
		{ { "--kernel", "/k", "--disk", "/a.img" }, 4, "--disk '/a.img'" },
		{ { "--kernel", "/k", "--disk", "path=/a,readonly=maybe" }, 4, "readonly" },
		{ { "--kernel", "/k", "--net", "tap=auto,host-ip=10.0.2.1" }, 4, "--net" },
		{ { "--kernel", "/k", "--net", "vhost=on" }, 4, "--net" },
		{ { "--kernel", "/k", "--net" }, 3, "needs a value" },
	};

	check_bad_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

Test(cli, iommu_poll)
{
	struct vm_config c;
	enum cli_action a;
	char err[256];

	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k", "--iommu"), 0, "%s", err);
	cr_assert_eq(c.iommu_poll_us, MOAT_IOMMU_POLL_DEFAULT_US);
	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k", "--iommu", "--iommu-poll", "50"), 0, "%s", err);
	cr_assert_eq(c.iommu_poll_us, 50);
	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k", "--iommu", "--iommu-poll=0"), 0, "%s", err);
	cr_assert_eq(c.iommu_poll_us, 0);
	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k", "--iommu", "--iommu-poll=100001"), -EINVAL);
	cr_assert_not_null(strstr(err, "--iommu-poll '100001' is not a number of microseconds from 0 to 100000"), "%s",
			   err);
	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k", "--iommu", "--iommu-poll=fast"), -EINVAL);
	cr_assert_not_null(strstr(err, "--iommu-poll 'fast'"), "%s", err);
	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k", "--iommu-poll=50"), -EINVAL);
	cr_assert_str_eq(err, "--iommu-poll needs --iommu");
}

Test(cli, cpu_affinity)
{
	struct vm_config c;
	enum cli_action a;
	char err[256];
	cpu_set_t s;

	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k"), 0, "%s", err);
	cr_assert_null(c.vcpu_cpus_arg);
	cr_assert_null(c.device_cpus_arg);
	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k", "--vcpu-affinity", "0", "--device-affinity=1-3,6"), 0, "%s",
		     err);
	cr_assert_str_eq(c.vcpu_cpus_arg, "0");
	cr_assert_eq(CPU_COUNT(&c.vcpu_cpus), 1);
	cr_assert(CPU_ISSET(0, &c.vcpu_cpus));
	cr_assert_eq(CPU_COUNT(&c.device_cpus), 4);
	cr_assert(CPU_ISSET(1, &c.device_cpus) && CPU_ISSET(2, &c.device_cpus) && CPU_ISSET(3, &c.device_cpus) &&
		  CPU_ISSET(6, &c.device_cpus));

	cr_assert_eq(cli_parse_cpu_list("5,2-3,5", &s), 0, "repeats are fine");
	cr_assert_eq(CPU_COUNT(&s), 3);
	cr_assert_eq(cli_parse_cpu_list("1023", &s), 0);
	cr_assert(CPU_ISSET(1023, &s));
	static const char *const bad[] = { "", "1024", "3-1", "1,", ",1", "1-", "-1", "a", "1 2", "+1", "1-2-3",
					   "0x1", "99999999999999999999999" };
	for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(cli_parse_cpu_list(bad[i], &s), -EINVAL, "'%s' accepted", bad[i]);
	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k", "--vcpu-affinity", "2-1"), -EINVAL);
	cr_assert_str_eq(err, "--vcpu-affinity '2-1' is not a list of CPU numbers (like 0-3,6; each below 1024)");
	cr_assert_eq(PARSE(&c, &a, err, "--kernel", "/k", "--device-affinity=x"), -EINVAL);
	cr_assert_not_null(strstr(err, "--device-affinity 'x'"), "%s", err);
}
