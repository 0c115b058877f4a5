/* msb guest agent: boot sequence (mounts, root switch, network, cgroups). Every step that
 * fails is recorded in g_boot and reported in HELLO; nothing here may stop the agent from
 * serving the protocol. */
#include "agent.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

struct boot g_boot = { .scratch_fd = -1 };

static const char *keep(const char *fmt, va_list ap)
{
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0) return "out of memory";
	return s;
}

void logmsg(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line - 1, fmt, ap);
	va_end(ap);
	if (n < 0) return;
	if ((size_t)n > sizeof line - 2) n = sizeof line - 2;
	line[n++] = '\n';
	if (write(2, "msb-agent: ", 11) < 0 || write(2, line, (size_t)n) < 0) { /* no console */ }
}

/* Logs a boot message and keeps it (up to MAX_BOOT_MSGS) for HELLO. */
static void boot_note(const char *what, const char **list, int *n, const char *fmt, va_list ap)
{
	const char *s = keep(fmt, ap);
	logmsg("boot %s: %s", what, s);
	if (*n < MAX_BOOT_MSGS) list[(*n)++] = s;
}

void boot_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	boot_note("error", g_boot.errors, &g_boot.nerrors, fmt, ap);
	va_end(ap);
}

void boot_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	boot_note("warning", g_boot.warnings, &g_boot.nwarnings, fmt, ap);
	va_end(ap);
}

static uint64_t clock_ms(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
uint64_t now_ms(void) { return clock_ms(CLOCK_MONOTONIC); }
uint64_t boot_ms(void) { return clock_ms(CLOCK_BOOTTIME); }

int mkdir_p(const char *path, mode_t mode)
{
	char tmp[4096];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof tmp) { errno = ENAMETOOLONG; return -1; }
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/') continue;
		*p = 0;
		if (mkdir(tmp, mode) < 0 && errno != EEXIST) return -1;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST) return -1;
	return 0;
}

int write_file_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0) return -1;
	ssize_t n = write(fd, s, strlen(s));
	int e = errno;
	close(fd);
	errno = e;
	return n == (ssize_t)strlen(s) ? 0 : -1;
}

static int do_mount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
	mkdir_p(dst, 0755);
	if (mount(src, dst, type, flags, data) == 0) return 0;
	return errno == EBUSY ? 0 : -1;
}

/* Waits briefly for a block device: virtio-mmio probing is normally done before init runs. */
static int wait_dev(const char *path, int ms)
{
	struct stat st;
	for (int i = 0; i <= ms / 10; i++) {
		if (stat(path, &st) == 0) return 0;
		usleep(10000);
	}
	return -1;
}

/* Copies a file tree (regular files, dirs, symlinks) from the initramfs. */
static int copy_tree(const char *src, const char *dst)
{
	DIR *d = opendir(src);
	if (!d) return -1;
	mkdir_p(dst, 0755);
	struct dirent *e;
	int rc = 0;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
		char s[1024], t[1024];
		snprintf(s, sizeof s, "%s/%s", src, e->d_name);
		snprintf(t, sizeof t, "%s/%s", dst, e->d_name);
		struct stat st;
		if (lstat(s, &st) < 0) { rc = -1; continue; }
		if (S_ISDIR(st.st_mode)) {
			if (copy_tree(s, t) < 0) rc = -1;
		} else if (S_ISREG(st.st_mode)) {
			int in = open(s, O_RDONLY | O_CLOEXEC);
			int out = open(t, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, st.st_mode & 07777);
			char buf[16384];
			ssize_t n;
			if (in < 0 || out < 0) rc = -1;
			else
				while ((n = read(in, buf, sizeof buf)) > 0)
					if (write(out, buf, (size_t)n) != n) { rc = -1; break; }
			if (in >= 0) close(in);
			if (out >= 0) close(out);
		}
	}
	closedir(d);
	return rc;
}

static void move_mount(const char *from, const char *to)
{
	mkdir_p(to, 0755);
	if (mount(from, to, NULL, MS_MOVE, NULL) < 0) boot_warn("could not move %s into the new root: %s", from, strerror(errno));
}

/* A disk whose virtio serial is `serial` (-device virtio-blk-device,serial=…), else the
 * fallback name: disks are vda (image) and vdb (scratch) in QEMU's device order. */
static void find_disk(const char *serial, const char *fallback, char *out, size_t n)
{
	snprintf(out, n, "%s", fallback);
	DIR *d = opendir("/sys/block");
	if (!d) return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, "vd", 2)) continue;
		char p[300], v[64] = "";
		snprintf(p, sizeof p, "/sys/block/%s/serial", e->d_name);
		FILE *f = fopen(p, "re");
		if (!f) continue;
		if (!fgets(v, sizeof v, f)) v[0] = 0;
		fclose(f);
		v[strcspn(v, "\n")] = 0;
		if (!strcmp(v, serial)) {
			snprintf(out, n, "/dev/%.32s", e->d_name);
			break;
		}
	}
	closedir(d);
}

static int setup_root(void)
{
	char rootdev[64], scratchdev[64];
	/* The image: read-only erofs (ext4 tolerated for hand-made images). */
	if (wait_dev("/dev/vda", 2000) < 0) {
		boot_error("could not mount rootfs: no root disk (/dev/vda) found");
		return -1;
	}
	find_disk("msb-rootfs", "/dev/vda", rootdev, sizeof rootdev);
	find_disk("msb-scratch", "/dev/vdb", scratchdev, sizeof scratchdev);
	mkdir_p("/mnt/lower", 0755);
	if (mount(rootdev, "/mnt/lower", "erofs", MS_RDONLY, NULL) < 0) {
		int e = errno;
		if (mount(rootdev, "/mnt/lower", "ext4", MS_RDONLY, "noload") < 0) {
			boot_error("could not mount rootfs: %s is not erofs (%s) nor ext4 (%s)", rootdev, strerror(e), strerror(errno));
			return -1;
		}
	}

	/* The scratch disk: writable layer; survives stop/start. A tmpfs stands in when absent. */
	mkdir_p("/mnt/scratch", 0755);
	int scratch_ok = 0;
	if (wait_dev(scratchdev, 200) == 0) {
		if (mount(scratchdev, "/mnt/scratch", "ext4", MS_NOATIME, NULL) == 0) scratch_ok = 1;
		else boot_warn("could not mount scratch disk %s as ext4 (%s); changes will not persist", scratchdev, strerror(errno));
	} else {
		boot_warn("no scratch disk (%s); changes live in memory and will not persist", scratchdev);
	}
	if (!scratch_ok && mount("tmpfs", "/mnt/scratch", "tmpfs", 0, "mode=0755") < 0) {
		boot_error("could not mount a writable layer: %s", strerror(errno));
		return -1;
	}
	g_boot.scratch_fd = open("/mnt/scratch", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	mkdir_p("/mnt/scratch/upper", 0755);
	mkdir_p("/mnt/scratch/work", 0755);

	mkdir_p("/mnt/root", 0755);
	if (mount("overlay", "/mnt/root", "overlay", 0,
		  "lowerdir=/mnt/lower,upperdir=/mnt/scratch/upper,workdir=/mnt/scratch/work") < 0) {
		boot_error("could not mount the overlay root: %s", strerror(errno));
		return -1;
	}

	move_mount("/proc", "/mnt/root/proc");
	move_mount("/sys", "/mnt/root/sys");
	move_mount("/dev", "/mnt/root/dev");

	/* REPL drivers: copied from the initramfs into a tmpfs so every image gets them. */
	if (do_mount("tmpfs", "/mnt/root/run/msb", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m") < 0 ||
	    copy_tree("/msb", "/mnt/root/run/msb") < 0)
		boot_warn("could not install the REPL drivers in /run/msb: %s", strerror(errno));

	if (chdir("/mnt/root") < 0 || mount("/mnt/root", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0) {
		boot_error("could not switch to the image's root: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static void setup_dev(void)
{
	mkdir_p("/dev/pts", 0755);
	if (do_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "ptmxmode=0666,mode=0620,gid=5") < 0)
		boot_warn("could not mount /dev/pts: %s", strerror(errno));
	struct stat st;
	if (lstat("/dev/ptmx", &st) < 0) symlink("pts/ptmx", "/dev/ptmx");
	if (do_mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0)
		boot_warn("could not mount /dev/shm: %s", strerror(errno));
	if (lstat("/dev/fd", &st) < 0) symlink("/proc/self/fd", "/dev/fd");
	if (lstat("/dev/stdin", &st) < 0) symlink("/proc/self/fd/0", "/dev/stdin");
	if (lstat("/dev/stdout", &st) < 0) symlink("/proc/self/fd/1", "/dev/stdout");
	if (lstat("/dev/stderr", &st) < 0) symlink("/proc/self/fd/2", "/dev/stderr");
	if (stat("/tmp", &st) < 0) {
		mkdir("/tmp", 01777);
		chmod("/tmp", 01777);
	}
}

static uint64_t meminfo_kb(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "re");
	if (!f) return 0;
	char line[256];
	uint64_t v = 0;
	size_t kl = strlen(key);
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			v = strtoull(line + kl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static uint64_t read_u64(const char *path)
{
	FILE *f = fopen(path, "re");
	unsigned long long v = 0;
	if (f) {
		if (fscanf(f, "%llu", &v) != 1) v = 0;
		fclose(f);
	}
	return v;
}

/* User processes live under /sys/fs/cgroup/msb (one leaf per exec), limited a bit below the
 * guest's totals, so a fork bomb or a memory hog hits these limits and the OOM killer picks
 * user code; the agent stays in the root cgroup with oom_score_adj -1000. */
static void setup_cgroups(void)
{
	if (do_mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
		boot_warn("no cgroup v2 (%s): user code is not resource-limited", strerror(errno));
		return;
	}
	write_file_str("/sys/fs/cgroup/cgroup.subtree_control", "+memory");
	write_file_str("/sys/fs/cgroup/cgroup.subtree_control", "+pids");
	write_file_str("/sys/fs/cgroup/cgroup.subtree_control", "+cpu");
	if (mkdir("/sys/fs/cgroup/msb", 0755) < 0 && errno != EEXIST) {
		boot_warn("could not create the user cgroup: %s", strerror(errno));
		return;
	}
	write_file_str("/sys/fs/cgroup/msb/cgroup.subtree_control", "+memory");
	write_file_str("/sys/fs/cgroup/msb/cgroup.subtree_control", "+pids");
	char v[32];
	uint64_t total = meminfo_kb("MemTotal") * 1024;
	if (total) {
		uint64_t reserve = 32 * 1048576ull + total / 20;
		g_boot.mem_limit = total > 2 * reserve ? total - reserve : total / 2;
		snprintf(v, sizeof v, "%llu", (unsigned long long)g_boot.mem_limit);
		if (write_file_str("/sys/fs/cgroup/msb/memory.max", v) < 0) g_boot.mem_limit = 0;
	}
	uint64_t tmax = read_u64("/proc/sys/kernel/threads-max"), pmax = read_u64("/proc/sys/kernel/pid_max");
	uint64_t lim = tmax && pmax ? (tmax < pmax ? tmax : pmax) : (tmax ? tmax : pmax);
	if (lim > 256) {
		g_boot.pids_limit = lim - 128;
		snprintf(v, sizeof v, "%llu", (unsigned long long)g_boot.pids_limit);
		if (write_file_str("/sys/fs/cgroup/msb/pids.max", v) < 0) g_boot.pids_limit = 0;
	}
	g_boot.cgroup_ok = 1;
}

static int sin_set(struct sockaddr *sa, const char *ip)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)sa;
	memset(sin, 0, sizeof *sin);
	sin->sin_family = AF_INET;
	return inet_pton(AF_INET, ip, &sin->sin_addr) == 1 ? 0 : -1;
}

static int if_up(int sock, const char *name)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) return -1;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	return ioctl(sock, SIOCSIFFLAGS, &ifr);
}

/* Static IPv4 set-up by ioctl: address/prefix, up, default route. cidr "a.b.c.d/n". */
int net_configure(const char *ifname, const char *cidr, const char *gw, char *err, size_t errlen)
{
	char ip[64];
	int prefix = 24;
	snprintf(ip, sizeof ip, "%s", cidr);
	char *slash = strchr(ip, '/');
	if (slash) {
		*slash = 0;
		prefix = atoi(slash + 1);
	}
	if (prefix < 0 || prefix > 32) {
		snprintf(err, errlen, "bad prefix length in %s", cidr);
		return -1;
	}
	int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
	int rc = -1;
	if (sin_set(&ifr.ifr_addr, ip) < 0) {
		snprintf(err, errlen, "bad address %s", cidr);
		goto out;
	}
	if (ioctl(sock, SIOCSIFADDR, &ifr) < 0) {
		snprintf(err, errlen, "set address of %s: %s", ifname, strerror(errno));
		goto out;
	}
	struct sockaddr_in *m = (struct sockaddr_in *)&ifr.ifr_netmask;
	m->sin_family = AF_INET;
	m->sin_addr.s_addr = htonl(prefix ? 0xffffffffu << (32 - prefix) : 0);
	if (ioctl(sock, SIOCSIFNETMASK, &ifr) < 0) {
		snprintf(err, errlen, "set netmask of %s: %s", ifname, strerror(errno));
		goto out;
	}
	if (if_up(sock, ifname) < 0) {
		snprintf(err, errlen, "bring %s up: %s", ifname, strerror(errno));
		goto out;
	}
	if (gw && *gw) {
		struct rtentry rt;
		memset(&rt, 0, sizeof rt);
		sin_set(&rt.rt_dst, "0.0.0.0");
		sin_set(&rt.rt_genmask, "0.0.0.0");
		if (sin_set(&rt.rt_gateway, gw) < 0) {
			snprintf(err, errlen, "bad gateway %s", gw);
			goto out;
		}
		rt.rt_flags = RTF_UP | RTF_GATEWAY;
		rt.rt_dev = ifr.ifr_name;
		if (ioctl(sock, SIOCADDRT, &rt) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "add default route via %s: %s", gw, strerror(errno));
			goto out;
		}
	}
	rc = 0;
out:
	close(sock);
	return rc;
}

int write_resolv_conf(const char *const *dns, int n)
{
	char buf[1024];
	size_t len = 0;
	for (int i = 0; i < n && len < sizeof buf - 64; i++)
		len += (size_t)snprintf(buf + len, sizeof buf - len, "nameserver %s\n", dns[i]);
	unlink("/etc/resolv.conf.msb");
	int fd = open("/etc/resolv.conf.msb", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) return -1;
	int ok = write(fd, buf, len) == (ssize_t)len;
	close(fd);
	/* rename replaces a dangling symlink (systemd-resolved style) as well as a file */
	if (!ok || rename("/etc/resolv.conf.msb", "/etc/resolv.conf") < 0) return -1;
	return 0;
}

static void setup_net(void)
{
	int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0 || if_up(sock, "lo") < 0) boot_warn("could not bring up lo: %s", strerror(errno));
	if (sock >= 0) close(sock);
	if (!if_nametoindex("eth0")) return;
	char err[256];
	if (net_configure("eth0", "10.0.2.15/24", "10.0.2.2", err, sizeof err) < 0) {
		boot_warn("network: %s", err);
		return;
	}
	const char *dns[] = { "10.0.2.3" };
	if (g_boot.root_ok && write_resolv_conf(dns, 1) < 0) boot_warn("could not write /etc/resolv.conf: %s", strerror(errno));
}

void boot_system(void)
{
	g_boot.t_start_ms = boot_ms();
	umask(022);
	mkdir_p("/proc", 0555);
	mkdir_p("/sys", 0555);
	mkdir_p("/dev", 0755);
	if (do_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) boot_error("could not mount /proc: %s", strerror(errno));
	if (do_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) boot_error("could not mount /sys: %s", strerror(errno));
	if (do_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") < 0) boot_error("could not mount /dev: %s", strerror(errno));
	if (fcntl(2, F_GETFD) < 0) {
		/* no console from the kernel: open our own, so boot messages reach ttyS0 */
		int fd = open("/dev/console", O_RDWR | O_NOCTTY);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
			if (fd > 2) close(fd);
		}
	}
	/* The agent must outlive any out-of-memory situation. */
	write_file_str("/proc/self/oom_score_adj", "-1000");

	g_boot.root_ok = setup_root() == 0;
	if (!g_boot.root_ok) logmsg("staying in the initramfs so the host can be told why");
	setup_dev();
	g_boot.t_root_ms = boot_ms();
	setup_cgroups();
	setup_net();
	sethostname("msb", 3);
}
