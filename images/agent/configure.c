/* msb guest agent: configure (identity, clock, entropy, mounts, network), metrics, HELLO and
 * shutdown. */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* From <linux/random.h>, which musl's toolchain does not ship. */
#define RNDADDENTROPY _IOW('R', 0x03, int[2])
#define RNDRESEEDCRNG _IO('R', 0x07)
struct rand_pool_info {
	int entropy_count;
	int buf_size;
	uint32_t buf[];
};

/* ------------------------------------------------------------------ configure, metrics */

static int b64val(int c)
{
	if (c >= 'A' && c <= 'Z') return c - 'A';
	if (c >= 'a' && c <= 'z') return c - 'a' + 26;
	if (c >= '0' && c <= '9') return c - '0' + 52;
	if (c == '+' || c == '-') return 62;
	if (c == '/' || c == '_') return 63;
	return -1;
}

static long b64decode(const char *s, unsigned char *out, size_t cap)
{
	size_t o = 0;
	unsigned acc = 0;
	int bits = 0;
	for (; *s && *s != '='; s++) {
		int v = b64val((unsigned char)*s);
		if (v < 0) return -1;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= cap) return -1;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	return (long)o;
}

static int is_mounted(const char *path)
{
	struct stat a, b;
	char parent[4200];
	snprintf(parent, sizeof parent, "%s/..", path);
	if (stat(path, &a) < 0 || stat(parent, &b) < 0) return 0;
	return a.st_dev != b.st_dev || a.st_ino == b.st_ino;
}

void op_configure(uint32_t id, const jval *req)
{
	jbuf jb;
	jb_init(&jb, 65536);
	jb_obj(&jb);
	jb_key(&jb, "errors");
	jb_arr(&jb);
#define CFG_ERR(...) do { char m_[512]; snprintf(m_, sizeof m_, __VA_ARGS__); jb_str(&jb, m_); } while (0)
	const char *host = NULL, *workdir = NULL, *entropy = NULL;
	int64_t t_ms = 0;

	if (json_str(req, "hostname", &host) < 0) CFG_ERR("hostname must be a string");
	else if (host && !A.test_mode) {
		size_t n = strlen(host);
		if (n == 0 || n > 63 || strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") != n)
			CFG_ERR("hostname must be 1-63 letters, digits, '-' or '.'");
		else if (sethostname(host, n) < 0)
			CFG_ERR("sethostname: %s", strerror(errno));
		else {
			int fd = open("/etc/hostname", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
			if (fd >= 0) {
				dprintf(fd, "%s\n", host);
				close(fd);
			}
			FILE *f = fopen("/etc/hosts", "we");
			if (f) {
				fprintf(f, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t%s\n", host);
				fclose(f);
			}
		}
	}

	const jval *env = json_get(req, "env");
	if (env && env->type != J_NULL) {
		char **e = calloc(1, sizeof(char *));
		size_t n = 0;
		const char *msg = e ? env_apply(&e, &n, env) : "out of memory";
		if (msg) {
			CFG_ERR("env: %s", msg);
			env_free(e);
		} else {
			env_free(A.base_env); /* replaced, not merged: configure can be re-run */
			A.base_env = e;
		}
	}

	if (json_str(req, "workdir", &workdir) < 0 || (workdir && workdir[0] != '/')) CFG_ERR("workdir must be an absolute path");
	else if (workdir) {
		if (mkdir_p(workdir, 0755) < 0) CFG_ERR("workdir %s: %s", workdir, strerror(errno));
		else {
			free(A.workdir);
			A.workdir = strdup(workdir);
		}
	}

	if (json_i64(req, "time_unix_ms", &t_ms) < 0) CFG_ERR("time_unix_ms must be an integer");
	else if (t_ms > 0 && !A.test_mode) {
		struct timespec ts = { .tv_sec = t_ms / 1000, .tv_nsec = (t_ms % 1000) * 1000000 };
		if (clock_settime(CLOCK_REALTIME, &ts) < 0) CFG_ERR("set clock: %s", strerror(errno));
	}

	if (json_str(req, "entropy", &entropy) < 0) CFG_ERR("entropy must be base64");
	else if (entropy && !A.test_mode) {
		struct { struct rand_pool_info info; unsigned char data[512]; } rp;
		_Static_assert(sizeof(struct rand_pool_info) == 8, "rand_pool_info layout");
		long n = b64decode(entropy, rp.data, sizeof rp.data);
		if (n < 0) CFG_ERR("entropy must be at most 512 bytes of base64");
		else if (n > 0) {
			rp.info.entropy_count = (int)n * 8;
			rp.info.buf_size = (int)n;
			int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
			if (fd < 0 || ioctl(fd, RNDADDENTROPY, &rp.info) < 0) CFG_ERR("seed RNG: %s", strerror(errno));
			/* After a snapshot restore every clone starts from the same CRNG state (and the
			 * same per-CPU keys): force a reseed now rather than at the next interval, so the
			 * first read of /dev/urandom already differs between clones. */
			else if (ioctl(fd, RNDRESEEDCRNG) < 0) CFG_ERR("reseed RNG: %s", strerror(errno));
			if (fd >= 0) close(fd);
		}
	}

	const jval *mounts = json_get(req, "mounts");
	if (mounts && mounts->type != J_NULL && !A.test_mode) {
		if (mounts->type != J_ARR) CFG_ERR("mounts must be an array");
		else
			for (const jval *m = mounts->child; m; m = m->next) {
				const char *tag = NULL, *path = NULL;
				int ro = 0;
				if (json_str(m, "tag", &tag) != 1 || json_str(m, "path", &path) != 1 || path[0] != '/' || json_bool(m, "readonly", &ro) < 0) {
					CFG_ERR("each mount needs tag, an absolute path and optional readonly");
					continue;
				}
				if (mkdir_p(path, 0755) < 0) {
					CFG_ERR("mount %s: cannot create %s: %s", tag, path, strerror(errno));
					continue;
				}
				if (is_mounted(path)) continue; /* re-run after restore: already there */
				if (mount(tag, path, "9p", ro ? MS_RDONLY : 0, "trans=virtio,version=9p2000.L,msize=524288,cache=mmap") < 0)
					CFG_ERR("mount %s at %s: %s", tag, path, strerror(errno));
			}
	}

	const jval *net = json_get(req, "network");
	if (net && net->type != J_NULL && !A.test_mode) {
		const char *ip = "10.0.2.15/24", *gw = "10.0.2.2";
		int enabled = 1;
		if (net->type != J_OBJ || json_str(net, "ip", &ip) < 0 || json_str(net, "gateway", &gw) < 0 || json_bool(net, "enabled", &enabled) < 0) {
			CFG_ERR("network must be {enabled?, ip?: \"a.b.c.d/n\", gateway?, dns?: [..]}");
		} else if (enabled) {
			char e[256];
			if (net_configure("eth0", ip, gw, e, sizeof e) < 0) CFG_ERR("network: %s", e);
			const jval *dns = json_get(net, "dns");
			if (dns && dns->type == J_ARR) {
				const char *list[8];
				int n = 0;
				for (const jval *d = dns->child; d && n < 8; d = d->next)
					if (d->type == J_STR && strlen(d->str) < 64 && strspn(d->str, "0123456789abcdefABCDEF.:") == d->len) list[n++] = d->str;
				if (write_resolv_conf(list, n) < 0) CFG_ERR("resolv.conf: %s", strerror(errno));
			}
		}
	}
#undef CFG_ERR
	jb_aend(&jb);
	jb_end(&jb);
	send_json(K_RESPONSE, id, &jb);
}

void op_metrics(uint32_t id)
{
	jbuf jb;
	jb_init(&jb, 4096);
	jb_obj(&jb);
	FILE *f = fopen("/proc/stat", "re");
	unsigned long long v[10] = { 0 };
	if (f) {
		if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]) < 4)
			memset(v, 0, sizeof v);
		fclose(f);
	}
	unsigned long long total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7]; /* guest/guest_nice are in user */
	unsigned long long idle = v[3] + v[4];
	double pct = 0;
	if (total > A.cpu_last_total) {
		unsigned long long dt = total - A.cpu_last_total, di = idle - A.cpu_last_idle;
		pct = 100.0 * (double)(dt - (di > dt ? dt : di)) / (double)dt;
	}
	A.cpu_last_total = total;
	A.cpu_last_idle = idle;
	jb_key(&jb, "cpu_pct");
	jb_dbl(&jb, (double)(long long)(pct * 100 + 0.5) / 100);

	unsigned long long mt = 0, ma = 0;
	f = fopen("/proc/meminfo", "re");
	if (f) {
		char line[128];
		while (fgets(line, sizeof line, f)) {
			sscanf(line, "MemTotal: %llu", &mt);
			sscanf(line, "MemAvailable: %llu", &ma);
		}
		fclose(f);
	}
	jb_ki64(&jb, "mem_total_bytes", (int64_t)mt * 1024);
	jb_ki64(&jb, "mem_used_bytes", (int64_t)(mt > ma ? mt - ma : 0) * 1024);
	if (g_boot.mem_limit) jb_ki64(&jb, "mem_limit_bytes", (int64_t)g_boot.mem_limit);
	struct statfs sf;
	if (g_boot.scratch_fd >= 0 && fstatfs(g_boot.scratch_fd, &sf) == 0) {
		jb_ki64(&jb, "disk_total_bytes", (int64_t)(sf.f_blocks * (uint64_t)sf.f_frsize));
		jb_ki64(&jb, "disk_used_bytes", (int64_t)((sf.f_blocks - sf.f_bfree) * (uint64_t)sf.f_frsize));
	}
	int procs = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;
	if (d) {
		while ((e = readdir(d)))
			if (e->d_name[0] >= '1' && e->d_name[0] <= '9') procs++;
		closedir(d);
	}
	jb_ki64(&jb, "procs", procs);
	jb_ki64(&jb, "streams", A.nstreams);
	struct timespec up;
	clock_gettime(CLOCK_BOOTTIME, &up);
	jb_ki64(&jb, "uptime_ms", (int64_t)up.tv_sec * 1000 + up.tv_nsec / 1000000);
	jb_end(&jb);
	send_json(K_RESPONSE, id, &jb);
}

static void write_hello(jbuf *jb)
{
	struct utsname u;
	uname(&u);
	jb_obj(jb);
	jb_ki64(jb, "protocol", PROTOCOL_VERSION);
	jb_kstr(jb, "agent", AGENT_VERSION);
	jb_kstr(jb, "kernel", u.release);
	jb_ki64(jb, "max_frame_bytes", MAX_FRAME);
	jb_ki64(jb, "window_bytes", WINDOW_BYTES);
	jb_kbool(jb, "ready", g_boot.nerrors == 0);
	jb_key(jb, "boot_ms");
	jb_obj(jb);
	jb_ki64(jb, "kernel", (int64_t)g_boot.t_start_ms);
	jb_ki64(jb, "root", (int64_t)(g_boot.t_root_ms - g_boot.t_start_ms));
	jb_ki64(jb, "agent", (int64_t)(g_boot.t_ready_ms - g_boot.t_start_ms));
	jb_ki64(jb, "total", (int64_t)g_boot.t_ready_ms);
	jb_end(jb);
	jb_key(jb, "boot_errors");
	jb_arr(jb);
	for (int i = 0; i < g_boot.nerrors; i++) jb_str(jb, g_boot.errors[i]);
	jb_aend(jb);
	jb_key(jb, "boot_warnings");
	jb_arr(jb);
	for (int i = 0; i < g_boot.nwarnings; i++) jb_str(jb, g_boot.warnings[i]);
	jb_aend(jb);
	jb_key(jb, "streams");
	jb_arr(jb);
	for (struct stream *s = A.streams; s; s = s->next)
		if (s->kind == S_PROC) jb_i64(jb, s->id);
	jb_aend(jb);
	jb_end(jb);
}

void send_hello(uint8_t kind, uint32_t id)
{
	jbuf jb;
	jb_init(&jb, 65536);
	write_hello(&jb);
	send_json(kind, id, &jb);
}

/* ------------------------------------------------------------------ shutdown */

void op_shutdown(uint32_t id, const jval *req)
{
	(void)req;
	if (A.test_mode) {
		reply_ok(id);
		flush_out_blocking(1000);
		exit(0);
	}
	A.shutting_down = 1;
	logmsg("shutting down");
	kill(-1, SIGTERM);
	uint64_t until = now_ms() + 1000;
	while (now_ms() < until) {
		while (waitpid(-1, NULL, WNOHANG) > 0) {}
		if (kill(-1, 0) < 0 && errno == ESRCH) break;
		usleep(10000);
	}
	kill(-1, SIGKILL);
	while (waitpid(-1, NULL, WNOHANG) > 0) {}
	sync();
	/* Volumes first, then make the root read-only so ext4 is clean on the next start. */
	FILE *f = fopen("/proc/self/mounts", "re");
	char line[1024], dev[256], dir[512], type[64];
	if (f) {
		while (fgets(line, sizeof line, f))
			if (sscanf(line, "%255s %511s %63s", dev, dir, type) == 3 && !strcmp(type, "9p")) umount2(dir, MNT_DETACH);
		fclose(f);
	}
	mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL);
	sync();
	reply_ok(id);
	flush_out_blocking(1000);
	/* The guest kernel has no ACPI, so RB_POWER_OFF would only halt the CPU and leave QEMU
	 * running. A reset is an exit for QEMU started with -no-reboot (and reboot=t makes it
	 * immediate). */
	reboot(RB_AUTOBOOT);
	_exit(1);
}
