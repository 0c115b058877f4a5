/* msb guest agent: PID 1. Boots the guest (boot.c), then serves the agent protocol
 * (docs/agent-protocol.md) on the virtio-serial port "msb.agent". Single-threaded: one
 * poll loop over the port, a signalfd and the children's pipes. Every input from the host is
 * treated as hostile: bounded frames, bounded JSON, bounded buffers, and errors become
 * error frames rather than crashes. */
#include "agent.h"
#include "json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* From <linux/random.h>, which musl's toolchain does not ship. */
#define RNDADDENTROPY _IOW('R', 0x03, int[2])
#define RNDRESEEDCRNG _IO('R', 0x07)
struct rand_pool_info {
	int entropy_count;
	int buf_size;
	uint32_t buf[];
};

/* ------------------------------------------------------------------ buffers */

struct buf {
	char *d;
	size_t off, len, cap; /* live bytes are d[off .. off+len) */
};

static int buf_put(struct buf *b, const void *p, size_t n)
{
	if (b->off && b->off + b->len + n > b->cap) {
		memmove(b->d, b->d + b->off, b->len);
		b->off = 0;
	}
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n) cap *= 2;
		char *d = realloc(b->d, cap);
		if (!d) return -1;
		b->d = d;
		b->cap = cap;
	}
	memcpy(b->d + b->off + b->len, p, n);
	b->len += n;
	return 0;
}

static void buf_drop(struct buf *b, size_t n)
{
	b->off += n;
	b->len -= n;
	if (!b->len) b->off = 0;
}

static void buf_free(struct buf *b)
{
	free(b->d);
	memset(b, 0, sizeof *b);
}

/* ------------------------------------------------------------------ state */

enum skind { S_PROC, S_READ, S_WRITE };

struct stream {
	struct stream *next;
	uint32_t id;
	enum skind kind;
	int64_t out_window;      /* bytes we may still send on this stream */
	int64_t in_outstanding;  /* host bytes received and not yet credited back */
	int64_t in_credit;       /* consumed bytes to credit back with WINDOW */

	/* S_PROC */
	pid_t pid;
	int fd_in, fd_out, fd_err, fd_ctrl; /* -1 when closed; pty: fd_in == fd_out (master) */
	int pty;
	struct buf stdin_buf, ctrl_buf;
	int stdin_eof; /* host sent STDIN_EOF */
	int exited, status, timed_out;
	uint64_t start_ms, deadline_ms;
	uint64_t out_bytes, err_bytes;
	char cgroup[64];

	/* S_READ / S_WRITE */
	int fd;
	uint64_t remaining, done_bytes, size;
	int failed_errno;
	char *path, *tmp_path;
};

static struct {
	int port;                /* -1 until found */
	char port_path[64];
	int connected;
	int discarding;          /* after a fatal framing error: drop input until reconnect */
	uint64_t next_port_check;
	uint64_t next_sweep; /* ms; see sweep_cgroups in the main loop */
	int sigfd;

	unsigned char *in;       /* frame being received */
	size_t in_len;

	struct buf out;          /* encoded frames waiting for the port */
	size_t out_frame_left;   /* bytes of the frame at the head of `out` not yet written */
	struct buf frame_sizes;  /* u32 sizes of queued frames, to drop partial ones on disconnect */

	struct stream *streams;
	int nstreams;

	char **base_env;         /* from configure, "K=V" */
	char *workdir;
	unsigned long long cpu_last_total, cpu_last_idle;
	unsigned exec_seq;
	int shutting_down;
	int test_mode; /* not PID 1: never touch the machine (clock, hostname, mounts, power) */
} A = { .port = -1, .sigfd = -1 };

/* ------------------------------------------------------------------ frames out */

static void enqueue(uint8_t kind, uint32_t stream, const void *payload, size_t n)
{
	if (A.port < 0) return;
	unsigned char h[HDR];
	uint32_t len = (uint32_t)(n + 5);
	h[0] = (unsigned char)(len >> 24); h[1] = (unsigned char)(len >> 16); h[2] = (unsigned char)(len >> 8); h[3] = (unsigned char)len;
	h[4] = kind;
	h[5] = (unsigned char)(stream >> 24); h[6] = (unsigned char)(stream >> 16); h[7] = (unsigned char)(stream >> 8); h[8] = (unsigned char)stream;
	uint32_t total = (uint32_t)(n + HDR);
	if (buf_put(&A.out, h, HDR) < 0 || (n && buf_put(&A.out, payload, n) < 0) || buf_put(&A.frame_sizes, &total, 4) < 0) {
		logmsg("out of memory queueing a frame");
		return;
	}
	if (A.frame_sizes.len == 4) A.out_frame_left = total;
}

static void send_json(uint8_t kind, uint32_t stream, jbuf *jb)
{
	if (jb->err) {
		static const char e[] = "{\"error\":{\"code\":\"internal\",\"message\":\"reply too large or out of memory\"}}";
		enqueue(kind, stream, e, sizeof e - 1);
	} else {
		enqueue(kind, stream, jb->buf, jb->len);
	}
	jb_free(jb);
}

static void send_error_obj(uint8_t kind, uint32_t stream, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void send_error_obj(uint8_t kind, uint32_t stream, const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	jbuf jb;
	jb_init(&jb, 4096);
	jb_obj(&jb);
	jb_key(&jb, "error");
	jb_obj(&jb);
	jb_kstr(&jb, "code", code);
	jb_kstr(&jb, "message", msg);
	jb_end(&jb);
	jb_end(&jb);
	send_json(kind, stream, &jb);
}
#define reply_error(id, code, ...) send_error_obj(K_RESPONSE, id, code, __VA_ARGS__)

static const char *errno_code(int e)
{
	switch (e) {
	case ENOENT: return "not_found";
	case EACCES: case EPERM: case EROFS: return "permission_denied";
	case EEXIST: return "exists";
	case ENOTDIR: return "not_a_directory";
	case EISDIR: return "is_a_directory";
	case ENOSPC: case EDQUOT: return "no_space";
	case ENAMETOOLONG: case EINVAL: return "bad_request";
	default: return "io_error";
	}
}

static void send_window(struct stream *s, int force)
{
	if (s->in_credit <= 0) return;
	if (!force && s->in_credit < 32768) return;
	unsigned char p[4];
	uint32_t c = (uint32_t)s->in_credit;
	p[0] = (unsigned char)(c >> 24); p[1] = (unsigned char)(c >> 16); p[2] = (unsigned char)(c >> 8); p[3] = (unsigned char)c;
	enqueue(K_WINDOW, s->id, p, 4);
	s->in_outstanding -= s->in_credit;
	s->in_credit = 0;
}

/* ------------------------------------------------------------------ streams */

static struct stream *find_stream(uint32_t id)
{
	for (struct stream *s = A.streams; s; s = s->next)
		if (s->id == id) return s;
	return NULL;
}

static struct stream *new_stream(uint32_t id, enum skind kind)
{
	struct stream *s = calloc(1, sizeof *s);
	if (!s) return NULL;
	s->id = id;
	s->kind = kind;
	s->out_window = WINDOW_BYTES;
	s->fd_in = s->fd_out = s->fd_err = s->fd_ctrl = s->fd = -1;
	s->next = A.streams;
	A.streams = s;
	A.nstreams++;
	return s;
}

static void close_fd(int *fd)
{
	if (*fd >= 0) close(*fd);
	*fd = -1;
}

static void free_stream(struct stream *s)
{
	for (struct stream **pp = &A.streams; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	A.nstreams--;
	if (s->pty) s->fd_in = -1; /* same fd as fd_out */
	close_fd(&s->fd_in);
	close_fd(&s->fd_out);
	close_fd(&s->fd_err);
	close_fd(&s->fd_ctrl);
	close_fd(&s->fd);
	if (s->tmp_path) unlink(s->tmp_path);
	if (s->cgroup[0]) rmdir(s->cgroup); /* fails harmlessly while background processes remain */
	buf_free(&s->stdin_buf);
	buf_free(&s->ctrl_buf);
	free(s->path);
	free(s->tmp_path);
	free(s);
}

/* ------------------------------------------------------------------ processes */

static const struct { const char *name; int num; } SIGNALS[] = {
	{ "HUP", SIGHUP }, { "INT", SIGINT }, { "QUIT", SIGQUIT }, { "KILL", SIGKILL }, { "TERM", SIGTERM },
	{ "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "STOP", SIGSTOP }, { "CONT", SIGCONT }, { "ALRM", SIGALRM },
	{ "WINCH", SIGWINCH }, { "PIPE", SIGPIPE },
};

static int parse_signal(const jval *v)
{
	if (!v) return -1;
	if (v->type == J_NUM) return v->num >= 1 && v->num <= 64 && v->num == (int)v->num ? (int)v->num : -1;
	if (v->type != J_STR) return -1;
	const char *n = v->str;
	if (!strncmp(n, "SIG", 3)) n += 3;
	for (size_t i = 0; i < sizeof SIGNALS / sizeof SIGNALS[0]; i++)
		if (!strcmp(n, SIGNALS[i].name)) return SIGNALS[i].num;
	return -1;
}

static void kill_proc_tree(struct stream *s, int sig)
{
	if (s->pid <= 0 || s->exited) return;
	if (sig == SIGKILL && s->cgroup[0]) {
		char p[96];
		snprintf(p, sizeof p, "%s/cgroup.kill", s->cgroup);
		write_file_str(p, "1");
	}
	if (kill(-s->pid, sig) < 0) kill(s->pid, sig);
}

static void send_exit(struct stream *s)
{
	jbuf jb;
	jb_init(&jb, 4096);
	jb_obj(&jb);
	int sig = WIFSIGNALED(s->status) ? WTERMSIG(s->status) : 0;
	jb_ki64(&jb, "exit_code", WIFEXITED(s->status) ? WEXITSTATUS(s->status) : 128 + sig);
	jb_key(&jb, "signal");
	if (sig) jb_i64(&jb, sig); else jb_null(&jb);
	jb_kbool(&jb, "timed_out", s->timed_out);
	jb_ki64(&jb, "duration_ms", (int64_t)(now_ms() - s->start_ms));
	jb_ki64(&jb, "stdout_bytes", (int64_t)s->out_bytes);
	jb_ki64(&jb, "stderr_bytes", (int64_t)s->err_bytes);
	int oom = 0;
	if (s->cgroup[0]) {
		char p[96], line[128];
		snprintf(p, sizeof p, "%s/memory.events", s->cgroup);
		FILE *f = fopen(p, "re");
		if (f) {
			while (fgets(line, sizeof line, f))
				if (!strncmp(line, "oom_kill ", 9) && atoi(line + 9) > 0) oom = 1;
			fclose(f);
		}
	}
	jb_kbool(&jb, "oom_killed", oom);
	jb_end(&jb);
	send_json(K_EXIT, s->id, &jb);
}

/* Reads once from a child's output fd into a frame. Returns 1 data, 0 EOF, -1 would block,
 * -2 no window. */
static int pump_fd(struct stream *s, int *fd, uint8_t kind)
{
	if (*fd < 0) return 0;
	if (s->out_window <= 0) return -2;
	static char chunk[READ_CHUNK];
	size_t want = (size_t)s->out_window < READ_CHUNK ? (size_t)s->out_window : READ_CHUNK;
	ssize_t n = read(*fd, chunk, want);
	if (n > 0) {
		enqueue(kind, s->id, chunk, (size_t)n);
		s->out_window -= n;
		if (kind == K_STDOUT) s->out_bytes += (uint64_t)n;
		else if (kind == K_STDERR) s->err_bytes += (uint64_t)n;
		return 1;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) return -1;
	/* EOF, or EIO from a pty master once the slave side is gone */
	if (s->pty && fd == &s->fd_out) s->fd_in = -1;
	close_fd(fd);
	return 0;
}

/* Drains an fd until it would block or the window closes. Returns 1 if the fd is at rest
 * (EOF or would block), 0 if the window stopped us. */
static int drain_fd(struct stream *s, int *fd, uint8_t kind)
{
	for (int i = 0; i < 64; i++) {
		int r = pump_fd(s, fd, kind);
		if (r == 0 || r == -1) return 1;
		if (r == -2) return 0;
	}
	return 0;
}

static int pipe_pending(int fd)
{
	int n = 0;
	if (fd < 0 || ioctl(fd, FIONREAD, &n) < 0) return 0;
	return n;
}

/* After the child exits: deliver what is already in its pipes, then EXIT. Output written
 * later by stray background processes is not waited for. */
static int proc_try_finish(struct stream *s)
{
	if (!s->exited) return 0;
	if (!drain_fd(s, &s->fd_out, K_STDOUT) || !drain_fd(s, &s->fd_err, K_STDERR) || !drain_fd(s, &s->fd_ctrl, K_CTRL_OUT))
		return 0;
	send_exit(s);
	s->in_credit = s->in_outstanding; /* return any credit the host is still waiting on */
	send_window(s, 1);
	free_stream(s);
	return 1;
}

static void reap(void)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (struct stream *s = A.streams; s; s = s->next)
			if (s->kind == S_PROC && s->pid == pid && !s->exited) {
				s->exited = 1;
				s->status = status;
				break;
			}
	}
}

/* Writes buffered host input to the child. */
static void flush_input(struct stream *s, struct buf *b, int *fd, int is_stdin)
{
	while (*fd >= 0 && b->len) {
		ssize_t n = write(*fd, b->d + b->off, b->len);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
		if (n <= 0) {
			/* the child closed its end: drop what it will never read */
			s->in_credit += (int64_t)b->len;
			buf_drop(b, b->len);
			if (is_stdin && !s->pty) close_fd(fd);
			break;
		}
		buf_drop(b, (size_t)n);
		s->in_credit += n;
	}
	if (*fd < 0 && b->len) {
		s->in_credit += (int64_t)b->len;
		buf_drop(b, b->len);
	}
	if (is_stdin && s->stdin_eof && !b->len && *fd >= 0) {
		if (s->pty) {
			char eot = 4; /* ^D: the terminal's end of input */
			if (write(*fd, &eot, 1) == 1) s->stdin_eof = 0;
		} else {
			close_fd(fd);
		}
	}
	send_window(s, !b->len);
}

/* ------------------------------------------------------------------ exec */

struct rl_name { const char *name; int res; };
static const struct rl_name RLIMITS[] = {
	{ "cpu", RLIMIT_CPU }, { "fsize", RLIMIT_FSIZE }, { "data", RLIMIT_DATA }, { "stack", RLIMIT_STACK },
	{ "core", RLIMIT_CORE }, { "nofile", RLIMIT_NOFILE }, { "as", RLIMIT_AS }, { "nproc", RLIMIT_NPROC },
	{ "memlock", RLIMIT_MEMLOCK },
};

struct exec_args {
	char **argv, **envp;
	const char *cwd;
	int use_stdin, ctrl, use_pty;
	unsigned short rows, cols;
	int64_t uid, gid;
	struct { int res; struct rlimit lim; } rl[16];
	int nrl;
};

static int env_set(char ***envp, size_t *n, const char *k, size_t klen, const char *v)
{
	char *kv = malloc(klen + strlen(v) + 2);
	if (!kv) return -1;
	memcpy(kv, k, klen);
	kv[klen] = '=';
	strcpy(kv + klen + 1, v);
	for (size_t i = 0; i < *n; i++)
		if (!strncmp((*envp)[i], k, klen) && (*envp)[i][klen] == '=') {
			free((*envp)[i]);
			(*envp)[i] = kv;
			return 0;
		}
	char **e = realloc(*envp, (*n + 2) * sizeof(char *));
	if (!e) {
		free(kv);
		return -1;
	}
	e[(*n)++] = kv;
	e[*n] = NULL;
	*envp = e;
	return 0;
}

static void env_free(char **e)
{
	if (!e) return;
	for (char **p = e; *p; p++) free(*p);
	free(e);
}

/* Applies env given as {"K":"V"} or ["K=V"]; returns an error message or NULL. */
static const char *env_apply(char ***envp, size_t *n, const jval *v)
{
	if (!v || v->type == J_NULL) return NULL;
	if (v->type == J_OBJ) {
		for (const jval *c = v->child; c; c = c->next) {
			if (c->type != J_STR || strlen(c->str) != c->len) return "env values must be strings without NUL";
			if (!*c->key || strchr(c->key, '=')) return "env names must be non-empty and without '='";
			if (env_set(envp, n, c->key, strlen(c->key), c->str) < 0) return "out of memory";
		}
		return NULL;
	}
	if (v->type == J_ARR) {
		for (const jval *c = v->child; c; c = c->next) {
			const char *eq;
			if (c->type != J_STR || strlen(c->str) != c->len || !(eq = strchr(c->str, '=')) || eq == c->str)
				return "env entries must be \"NAME=value\" strings";
			if (env_set(envp, n, c->str, (size_t)(eq - c->str), eq + 1) < 0) return "out of memory";
		}
		return NULL;
	}
	return "env must be an object or an array of \"NAME=value\"";
}

static char **build_env(const jval *req_env, int pty, const char **err)
{
	char **e = calloc(1, sizeof(char *));
	size_t n = 0;
	if (!e) {
		*err = "out of memory";
		return NULL;
	}
	env_set(&e, &n, "PATH", 4, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	env_set(&e, &n, "HOME", 4, "/root");
	env_set(&e, &n, "LANG", 4, "C.UTF-8");
	if (pty) env_set(&e, &n, "TERM", 4, "xterm-256color");
	for (char **p = A.base_env; p && *p; p++) {
		const char *eq = strchr(*p, '=');
		env_set(&e, &n, *p, (size_t)(eq - *p), eq + 1);
	}
	if ((*err = env_apply(&e, &n, req_env))) {
		env_free(e);
		return NULL;
	}
	return e;
}

static void child_fail(int errfd, const char *stage)
{
	char msg[256];
	int e = errno;
	int n = snprintf(msg, sizeof msg, "%d %s", e, stage);
	if (write(errfd, msg, (size_t)n) < 0) { /* parent sees EOF: nothing more to do */ }
	_exit(127);
}

static void child_setup(struct exec_args *a, int in_r, int out_w, int err_w, int ctrl_c, int pty_slave_fd, int cg_fd, int errfd)
{
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	for (int sig = 1; sig < 65; sig++) signal(sig, SIG_DFL);
	if (cg_fd >= 0 && write(cg_fd, "0", 1) < 0) { /* stays in the parent's limits anyway */ }
	write_file_str("/proc/self/oom_score_adj", "0");
	if (setsid() < 0) child_fail(errfd, "setsid");
	if (a->use_pty) {
		if (ioctl(pty_slave_fd, TIOCSCTTY, 0) < 0) child_fail(errfd, "TIOCSCTTY");
		if (dup2(pty_slave_fd, 0) < 0 || dup2(pty_slave_fd, 1) < 0 || dup2(pty_slave_fd, 2) < 0) child_fail(errfd, "dup2");
	} else {
		int nul = -1;
		if (in_r < 0) {
			nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
			in_r = nul;
		}
		if (dup2(in_r, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0) child_fail(errfd, "dup2");
	}
	if (ctrl_c >= 0) {
		if (dup2(ctrl_c, 3) < 0) child_fail(errfd, "dup2");
	}
	syscall(SYS_close_range, a->ctrl ? 4 : 3, ~0U, 4 /* CLOSE_RANGE_CLOEXEC */);
	for (int i = 0; i < a->nrl; i++)
		if (setrlimit(a->rl[i].res, &a->rl[i].lim) < 0) child_fail(errfd, "setrlimit");
	if (a->gid >= 0) {
		if (setgroups(0, NULL) < 0 || setgid((gid_t)a->gid) < 0) child_fail(errfd, "setgid");
	}
	if (a->uid >= 0 && setuid((uid_t)a->uid) < 0) child_fail(errfd, "setuid");
	if (a->cwd && chdir(a->cwd) < 0) child_fail(errfd, "chdir");
	environ = a->envp;
	execvp(a->argv[0], a->argv);
	child_fail(errfd, "exec");
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* The counter `key` ("max ", "oom_kill ") of a cgroup events file, 0 if unknown. */
static long cg_event(const char *cg, const char *file, const char *key)
{
	char p[112], line[64];
	snprintf(p, sizeof p, "%s/%s", cg, file);
	FILE *f = fopen(p, "re");
	if (!f) return 0;
	long n = 0;
	size_t k = strlen(key);
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, k)) n = atol(line + k);
	fclose(f);
	return n;
}

/* Removes leaf cgroups of finished execs that still had dying processes when they ended
 * (rmdir fails on a populated cgroup, so live ones are untouched). Background processes a
 * finished exec left on purpose (`nohup server &`) keep running; but a leftover that has run
 * into its pids limit or had processes OOM-killed is a runaway — typically a fork bomb that
 * outlived its exec (`:(){ :|:& };:` returns at once) — and all of it is killed (cgroup.kill)
 * so the next exec gets the machine back. */
static void sweep_cgroups(void)
{
	DIR *d = opendir("/sys/fs/cgroup/msb");
	if (!d) return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] != 'x') continue;
		char p[96];
		snprintf(p, sizeof p, "/sys/fs/cgroup/msb/%.40s", e->d_name);
		int live = 0;
		for (struct stream *s = A.streams; s && !live; s = s->next)
			live = s->kind == S_PROC && !strcmp(s->cgroup, p);
		if (live) continue;
		if (rmdir(p) == 0 || errno != EBUSY) continue;
		if (cg_event(p, "pids.events", "max ") > 0 || cg_event(p, "memory.events", "oom_kill ") > 0) {
			char k[112];
			snprintf(k, sizeof k, "%s/cgroup.kill", p);
			write_file_str(k, "1");
		}
	}
	closedir(d);
}

static void op_exec(uint32_t id, const jval *req)
{
	struct exec_args a;
	memset(&a, 0, sizeof a);
	a.uid = a.gid = -1;
	const char *err = NULL;
	const jval *argv = json_get(req, "argv");
	int64_t timeout = 0;
	int b;

	if (!argv || argv->type != J_ARR || argv->len == 0 || argv->len > 65536) {
		reply_error(id, "bad_request", "exec needs argv: a non-empty array of strings");
		return;
	}
	a.argv = calloc(argv->len + 1, sizeof(char *));
	if (!a.argv) {
		reply_error(id, "internal", "out of memory");
		return;
	}
	size_t i = 0;
	for (const jval *c = argv->child; c; c = c->next) {
		if (c->type != J_STR || strlen(c->str) != c->len) {
			err = "argv entries must be strings without NUL";
			goto bad;
		}
		a.argv[i++] = c->str;
	}
	if (!*a.argv[0]) { err = "argv[0] is empty"; goto bad; }
	if (json_str(req, "cwd", &a.cwd) < 0) { err = "cwd must be a string"; goto bad; }
	if (!a.cwd) a.cwd = A.workdir;
	if ((b = json_bool(req, "stdin", &a.use_stdin)) < 0) { err = "stdin must be a boolean"; goto bad; }
	if (json_bool(req, "ctrl", &a.ctrl) < 0) { err = "ctrl must be a boolean"; goto bad; }
	if (json_i64(req, "timeout_ms", &timeout) < 0 || timeout < 0) { err = "timeout_ms must be a non-negative integer"; goto bad; }
	if (json_i64(req, "uid", &a.uid) < 0 || a.uid > 0x7fffffff) { err = "uid must be an integer"; goto bad; }
	if (json_i64(req, "gid", &a.gid) < 0 || a.gid > 0x7fffffff) { err = "gid must be an integer"; goto bad; }
	const jval *pty = json_get(req, "pty");
	if (pty && pty->type != J_NULL) {
		int64_t r = 24, c = 80;
		if (pty->type != J_OBJ || json_i64(pty, "rows", &r) < 0 || json_i64(pty, "cols", &c) < 0 || r < 1 || r > 65535 || c < 1 || c > 65535) {
			err = "pty must be {rows, cols} with values 1..65535";
			goto bad;
		}
		a.use_pty = 1;
		a.rows = (unsigned short)r;
		a.cols = (unsigned short)c;
	}
	const jval *rl = json_get(req, "rlimits");
	if (rl && rl->type != J_NULL) {
		if (rl->type != J_OBJ) { err = "rlimits must be an object"; goto bad; }
		for (const jval *c = rl->child; c; c = c->next) {
			size_t k;
			for (k = 0; k < sizeof RLIMITS / sizeof RLIMITS[0]; k++)
				if (!strcmp(c->key, RLIMITS[k].name)) break;
			if (k == sizeof RLIMITS / sizeof RLIMITS[0] || a.nrl >= 16) { err = "unknown rlimit (cpu fsize data stack core nofile as nproc memlock)"; goto bad; }
			double soft, hard;
			if (c->type == J_NUM) soft = hard = c->num;
			else if (c->type == J_ARR && c->len == 2 && c->child->type == J_NUM && c->child->next->type == J_NUM) {
				soft = c->child->num;
				hard = c->child->next->num;
			} else { err = "an rlimit is a number or [soft, hard]"; goto bad; }
			a.rl[a.nrl].res = RLIMITS[k].res;
			a.rl[a.nrl].lim.rlim_cur = soft < 0 ? RLIM_INFINITY : (rlim_t)soft;
			a.rl[a.nrl].lim.rlim_max = hard < 0 ? RLIM_INFINITY : (rlim_t)hard;
			a.nrl++;
		}
	}
	a.envp = build_env(json_get(req, "env"), a.use_pty, &err);
	if (!a.envp) goto bad;

	int in_p[2] = { -1, -1 }, out_p[2] = { -1, -1 }, err_p[2] = { -1, -1 }, ctrl_p[2] = { -1, -1 }, ep[2] = { -1, -1 };
	int master = -1, slave = -1, cg_fd = -1;
	char cg[64] = "";
	if (a.use_pty) {
		master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) goto sys_fail;
		char *sn = ptsname(master);
		if (!sn || (slave = open(sn, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) goto sys_fail;
		struct winsize ws = { .ws_row = a.rows, .ws_col = a.cols };
		ioctl(master, TIOCSWINSZ, &ws);
	} else {
		if ((a.use_stdin && pipe2(in_p, O_CLOEXEC) < 0) || pipe2(out_p, O_CLOEXEC) < 0 || pipe2(err_p, O_CLOEXEC) < 0) goto sys_fail;
	}
	if (a.ctrl && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctrl_p) < 0) goto sys_fail;
	if (pipe2(ep, O_CLOEXEC) < 0) goto sys_fail;
	if (g_boot.cgroup_ok) {
		sweep_cgroups();
		snprintf(cg, sizeof cg, "/sys/fs/cgroup/msb/x%u", ++A.exec_seq);
		if (mkdir(cg, 0755) == 0) {
			char p[96];
			/* Half the user budget per exec: a fork bomb hits its own limit (and is then
			 * recognisable, see sweep_cgroups) while the next exec still has room. */
			if (g_boot.pids_limit >= 64) {
				char v[32];
				snprintf(p, sizeof p, "%s/pids.max", cg);
				snprintf(v, sizeof v, "%llu", (unsigned long long)(g_boot.pids_limit / 2));
				write_file_str(p, v);
			}
			snprintf(p, sizeof p, "%s/cgroup.procs", cg);
			cg_fd = open(p, O_WRONLY | O_CLOEXEC);
		} else {
			cg[0] = 0;
			cg_fd = open("/sys/fs/cgroup/msb/cgroup.procs", O_WRONLY | O_CLOEXEC);
		}
	}

	pid_t pid = fork();
	if (pid < 0) goto sys_fail;
	if (pid == 0) child_setup(&a, in_p[0], out_p[1], err_p[1], ctrl_p[1], slave, cg_fd, ep[1]);

	close_fd(&ep[1]);
	close_fd(&in_p[0]);
	close_fd(&out_p[1]);
	close_fd(&err_p[1]);
	close_fd(&ctrl_p[1]);
	close_fd(&slave);
	close_fd(&cg_fd);
	char emsg[256];
	ssize_t en;
	while ((en = read(ep[0], emsg, sizeof emsg - 1)) < 0 && errno == EINTR) {}
	close_fd(&ep[0]);
	if (en > 0) {
		emsg[en] = 0;
		int e = atoi(emsg);
		const char *stage = strchr(emsg, ' ');
		stage = stage ? stage + 1 : "exec";
		waitpid(pid, NULL, 0);
		if (cg[0]) rmdir(cg);
		if (!strcmp(stage, "exec") && (e == ENOENT || e == ENOTDIR))
			reply_error(id, "not_found", "%s: command not found", a.argv[0]);
		else if (!strcmp(stage, "chdir"))
			reply_error(id, "not_found", "cannot change to working directory %s: %s", a.cwd, strerror(e));
		else
			reply_error(id, e == EACCES ? "permission_denied" : "spawn_failed", "%s failed for %s: %s", stage, a.argv[0], strerror(e));
		close_fd(&in_p[1]); close_fd(&out_p[0]); close_fd(&err_p[0]); close_fd(&ctrl_p[0]); close_fd(&master);
		goto out;
	}

	struct stream *s = new_stream(id, S_PROC);
	if (!s) {
		kill(-pid, SIGKILL);
		reply_error(id, "internal", "out of memory");
		goto out;
	}
	s->pid = pid;
	s->start_ms = now_ms();
	s->deadline_ms = timeout ? s->start_ms + (uint64_t)timeout : 0;
	memcpy(s->cgroup, cg, sizeof cg);
	if (a.use_pty) {
		s->pty = 1;
		s->fd_in = s->fd_out = master;
		set_nonblock(master);
	} else {
		s->fd_in = in_p[1];
		s->fd_out = out_p[0];
		s->fd_err = err_p[0];
		if (s->fd_in >= 0) set_nonblock(s->fd_in);
		set_nonblock(s->fd_out);
		set_nonblock(s->fd_err);
	}
	s->fd_ctrl = ctrl_p[0];
	if (s->fd_ctrl >= 0) set_nonblock(s->fd_ctrl);

	jbuf jb;
	jb_init(&jb, 256);
	jb_obj(&jb);
	jb_ki64(&jb, "pid", pid);
	jb_end(&jb);
	send_json(K_RESPONSE, id, &jb);
	goto out;

sys_fail:
	reply_error(id, "spawn_failed", "could not start %s: %s", a.argv[0], strerror(errno));
	close_fd(&in_p[0]); close_fd(&in_p[1]); close_fd(&out_p[0]); close_fd(&out_p[1]);
	close_fd(&err_p[0]); close_fd(&err_p[1]); close_fd(&ctrl_p[0]); close_fd(&ctrl_p[1]);
	close_fd(&ep[0]); close_fd(&ep[1]); close_fd(&master); close_fd(&slave); close_fd(&cg_fd);
	if (cg[0]) rmdir(cg);
	goto out;
bad:
	reply_error(id, "bad_request", "%s", err);
out:
	free(a.argv);
	env_free(a.envp);
}

static struct stream *proc_arg(uint32_t id, const jval *req)
{
	int64_t sid;
	if (json_i64(req, "stream", &sid) != 1 || sid <= 0 || sid > 0xffffffffLL) {
		reply_error(id, "bad_request", "stream must be the id of a running exec");
		return NULL;
	}
	struct stream *s = find_stream((uint32_t)sid);
	if (!s || s->kind != S_PROC) {
		reply_error(id, "no_such_stream", "no running process on stream %lld", (long long)sid);
		return NULL;
	}
	return s;
}

static void reply_ok(uint32_t id)
{
	static const char ok[] = "{\"ok\":true}";
	enqueue(K_RESPONSE, id, ok, sizeof ok - 1);
}

static void op_signal(uint32_t id, const jval *req)
{
	struct stream *s = proc_arg(id, req);
	if (!s) return;
	int sig = parse_signal(json_get(req, "signal"));
	if (sig < 0) {
		reply_error(id, "bad_request", "signal must be a number 1..64 or a name like \"SIGINT\"");
		return;
	}
	int group = 1;
	json_bool(req, "group", &group);
	if (!s->exited) {
		if (sig == SIGKILL && group) kill_proc_tree(s, SIGKILL);
		else if (!group || kill(-s->pid, sig) < 0) kill(s->pid, sig);
	}
	reply_ok(id);
}

static void op_resize(uint32_t id, const jval *req)
{
	struct stream *s = proc_arg(id, req);
	if (!s) return;
	int64_t r, c;
	if (json_i64(req, "rows", &r) != 1 || json_i64(req, "cols", &c) != 1 || r < 1 || c < 1 || r > 65535 || c > 65535) {
		reply_error(id, "bad_request", "resize needs rows and cols (1..65535)");
		return;
	}
	if (!s->pty || s->fd_out < 0) {
		reply_error(id, "bad_request", "stream %u has no terminal", s->id);
		return;
	}
	struct winsize ws = { .ws_row = (unsigned short)r, .ws_col = (unsigned short)c };
	ioctl(s->fd_out, TIOCSWINSZ, &ws);
	reply_ok(id);
}

/* ------------------------------------------------------------------ files */

static int path_arg(uint32_t id, const jval *req, const char **path)
{
	if (json_str(req, "path", path) != 1 || (*path)[0] != '/') {
		reply_error(id, "bad_request", "path must be an absolute path");
		return -1;
	}
	return 0;
}

static void op_read_file(uint32_t id, const jval *req)
{
	const char *path;
	int64_t max = 64ll << 20, off = 0;
	if (path_arg(id, req, &path) < 0) return;
	if (json_i64(req, "max_bytes", &max) < 0 || max < 0 || json_i64(req, "offset", &off) < 0 || off < 0) {
		reply_error(id, "bad_request", "max_bytes and offset must be non-negative integers");
		return;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		int e = errno;
		if (fd >= 0) close(fd);
		reply_error(id, errno_code(e), "cannot read %s: %s", path, strerror(e));
		return;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		reply_error(id, S_ISDIR(st.st_mode) ? "is_a_directory" : "bad_request", "%s is not a regular file", path);
		return;
	}
	if (off && lseek(fd, off, SEEK_SET) < 0) {
		close(fd);
		reply_error(id, "bad_request", "cannot seek in %s", path);
		return;
	}
	struct stream *s = new_stream(id, S_READ);
	if (!s) {
		close(fd);
		reply_error(id, "internal", "out of memory");
		return;
	}
	s->fd = fd;
	s->remaining = (uint64_t)max;
	s->size = (uint64_t)st.st_size;
}

/* One chunk per loop turn per stream, so a big file never starves other streams. */
static void read_file_step(struct stream *s)
{
	if (s->out_window <= 0) return;
	static char chunk[READ_CHUNK];
	size_t want = READ_CHUNK;
	if ((uint64_t)want > s->remaining) want = (size_t)s->remaining;
	if ((int64_t)want > s->out_window) want = (size_t)s->out_window;
	ssize_t n = want ? read(s->fd, chunk, want) : 0;
	if (n < 0 && errno == EINTR) return;
	if (n > 0) {
		enqueue(K_STDOUT, s->id, chunk, (size_t)n);
		s->out_window -= n;
		s->remaining -= (uint64_t)n;
		s->done_bytes += (uint64_t)n;
		return;
	}
	if (n < 0) {
		reply_error(s->id, "io_error", "read failed after %llu bytes: %s", (unsigned long long)s->done_bytes, strerror(errno));
	} else {
		char one;
		int more = s->remaining == 0 && read(s->fd, &one, 1) == 1;
		jbuf jb;
		jb_init(&jb, 512);
		jb_obj(&jb);
		jb_ki64(&jb, "bytes", (int64_t)s->done_bytes);
		jb_ki64(&jb, "size", (int64_t)s->size);
		jb_kbool(&jb, "truncated", more);
		jb_end(&jb);
		send_json(K_RESPONSE, s->id, &jb);
	}
	free_stream(s);
}

static void op_write_file(uint32_t id, const jval *req)
{
	const char *path;
	int64_t mode = 0644;
	int mkdirs = 0, append = 0;
	if (path_arg(id, req, &path) < 0) return;
	if (json_i64(req, "mode", &mode) < 0 || mode < 0 || mode > 07777 || json_bool(req, "mkdirs", &mkdirs) < 0 || json_bool(req, "append", &append) < 0) {
		reply_error(id, "bad_request", "mode must be an integer 0..07777; mkdirs and append booleans");
		return;
	}
	struct stream *s = new_stream(id, S_WRITE);
	if (!s || !(s->path = strdup(path))) {
		if (s) free_stream(s);
		reply_error(id, "internal", "out of memory");
		return;
	}
	if (mkdirs) {
		char *dir = strdup(path), *slash = dir ? strrchr(dir, '/') : NULL;
		if (slash && slash != dir) {
			*slash = 0;
			if (mkdir_p(dir, 0755) < 0) s->failed_errno = errno;
		}
		free(dir);
	}
	if (!s->failed_errno) {
		if (append) {
			s->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, (mode_t)mode);
		} else {
			/* written next to the target and renamed at STDIN_EOF: readers never see half a file */
			const char *slash = strrchr(path, '/');
			if (asprintf(&s->tmp_path, "%.*s/.%s.msb-XXXXXX", (int)(slash - path), path, slash + 1) < 0) s->tmp_path = NULL;
			s->fd = s->tmp_path ? mkostemp(s->tmp_path, O_CLOEXEC) : -1;
			if (s->fd < 0) {
				free(s->tmp_path);
				s->tmp_path = NULL;
			} else {
				fchmod(s->fd, (mode_t)mode);
			}
		}
		if (s->fd < 0) s->failed_errno = errno ? errno : EIO;
	}
	/* Errors are reported at STDIN_EOF, once the host has finished sending. */
}

static void write_file_data(struct stream *s, const char *p, size_t n)
{
	while (n && !s->failed_errno) {
		ssize_t w = write(s->fd, p, n);
		if (w < 0 && errno == EINTR) continue;
		if (w <= 0) {
			s->failed_errno = w < 0 ? errno : EIO;
			break;
		}
		p += w;
		n -= (size_t)w;
		s->done_bytes += (uint64_t)w;
	}
}

static void write_file_finish(struct stream *s)
{
	if (!s->failed_errno && s->tmp_path && rename(s->tmp_path, s->path) < 0) s->failed_errno = errno;
	if (!s->failed_errno && s->tmp_path) {
		free(s->tmp_path);
		s->tmp_path = NULL;
	}
	if (s->failed_errno) {
		reply_error(s->id, errno_code(s->failed_errno), "cannot write %s: %s", s->path, strerror(s->failed_errno));
	} else {
		jbuf jb;
		jb_init(&jb, 256);
		jb_obj(&jb);
		jb_ki64(&jb, "bytes", (int64_t)s->done_bytes);
		jb_end(&jb);
		send_json(K_RESPONSE, s->id, &jb);
	}
	free_stream(s);
}

static const char *ftype(mode_t m)
{
	return S_ISREG(m) ? "file" : S_ISDIR(m) ? "dir" : S_ISLNK(m) ? "symlink" : "other";
}

static void op_list_dir(uint32_t id, const jval *req)
{
	const char *path;
	int64_t max = 10000;
	if (path_arg(id, req, &path) < 0) return;
	if (json_i64(req, "max_entries", &max) < 0 || max < 0) {
		reply_error(id, "bad_request", "max_entries must be a non-negative integer");
		return;
	}
	DIR *d = opendir(path);
	if (!d) {
		reply_error(id, errno_code(errno), "cannot list %s: %s", path, strerror(errno));
		return;
	}
	jbuf jb;
	jb_init(&jb, MAX_FRAME - 5);
	jb_obj(&jb);
	jb_key(&jb, "entries");
	jb_arr(&jb);
	int64_t count = 0;
	int truncated = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
		if (count >= max || jb.len > MAX_FRAME - 65536) {
			truncated = 1;
			break;
		}
		struct stat st;
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
		jb_obj(&jb);
		jb_kstr(&jb, "name", e->d_name);
		jb_kstr(&jb, "type", ftype(st.st_mode));
		jb_ki64(&jb, "size", st.st_size);
		jb_ki64(&jb, "mode", st.st_mode & 07777);
		jb_ki64(&jb, "mtime_ms", (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000);
		jb_end(&jb);
		count++;
	}
	closedir(d);
	jb_aend(&jb);
	jb_kbool(&jb, "truncated", truncated);
	jb_end(&jb);
	send_json(K_RESPONSE, id, &jb);
}

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

static void op_configure(uint32_t id, const jval *req)
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

static void op_metrics(uint32_t id)
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

static void send_hello(uint8_t kind, uint32_t id)
{
	jbuf jb;
	jb_init(&jb, 65536);
	write_hello(&jb);
	send_json(kind, id, &jb);
}

/* ------------------------------------------------------------------ shutdown */

static void flush_out_blocking(int ms);

static void op_shutdown(uint32_t id, const jval *req)
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

/* ------------------------------------------------------------------ frames in */

static void handle_request(uint32_t id, const char *p, size_t n)
{
	if (id == 0) {
		send_error_obj(K_ERROR, 0, "bad_frame", "REQUEST on stream 0: stream 0 is reserved");
		return;
	}
	if (find_stream(id)) {
		send_error_obj(K_ERROR, id, "stream_busy", "stream %u is still in use", id);
		return;
	}
	const char *err = NULL;
	jblock *arena = NULL;
	jval *req = json_parse(p, n, &err, &arena);
	const char *op = NULL;
	if (!req) {
		reply_error(id, "bad_request", "request is not valid JSON: %s", err);
	} else if (req->type != J_OBJ || json_str(req, "op", &op) != 1) {
		reply_error(id, "bad_request", "request must be a JSON object with a string \"op\"");
	} else if (A.nstreams >= MAX_STREAMS && (!strcmp(op, "exec") || !strcmp(op, "read_file") || !strcmp(op, "write_file"))) {
		reply_error(id, "too_many_streams", "%d streams are open; wait for some to finish", A.nstreams);
	} else if (!strcmp(op, "ping")) {
		jbuf jb;
		jb_init(&jb, 256);
		jb_obj(&jb);
		jb_kbool(&jb, "pong", 1);
		jb_ki64(&jb, "uptime_ms", (int64_t)boot_ms());
		jb_end(&jb);
		send_json(K_RESPONSE, id, &jb);
	} else if (!strcmp(op, "hello")) send_hello(K_RESPONSE, id);
	else if (!strcmp(op, "configure")) op_configure(id, req);
	else if (!strcmp(op, "exec")) op_exec(id, req);
	else if (!strcmp(op, "signal")) op_signal(id, req);
	else if (!strcmp(op, "resize")) op_resize(id, req);
	else if (!strcmp(op, "read_file")) op_read_file(id, req);
	else if (!strcmp(op, "write_file")) op_write_file(id, req);
	else if (!strcmp(op, "list_dir")) op_list_dir(id, req);
	else if (!strcmp(op, "metrics")) op_metrics(id);
	else if (!strcmp(op, "shutdown")) op_shutdown(id, req);
	else reply_error(id, "unknown_op", "unknown op \"%.64s\"", op);
	json_free(arena);
}

static void handle_frame(uint8_t kind, uint32_t id, const char *p, size_t n)
{
	struct stream *s;
	switch (kind) {
	case K_REQUEST:
		handle_request(id, p, n);
		return;
	case K_STDIN:
	case K_CTRL_IN:
		s = find_stream(id);
		if (!s) return; /* the stream ended while the host was still sending: not an error */
		if (!n) return;
		if (s->in_outstanding + (int64_t)n > (int64_t)WINDOW_BYTES) {
			send_error_obj(K_ERROR, id, "window_exceeded", "host sent %zu bytes beyond the stream's window; data dropped", n);
			return;
		}
		s->in_outstanding += (int64_t)n;
		if (s->kind == S_WRITE && kind == K_STDIN) {
			write_file_data(s, p, n);
			s->in_credit += (int64_t)n;
			send_window(s, 1);
		} else if (s->kind == S_PROC) {
			int *fd = kind == K_STDIN ? &s->fd_in : &s->fd_ctrl;
			struct buf *b = kind == K_STDIN ? &s->stdin_buf : &s->ctrl_buf;
			if (*fd < 0 || buf_put(b, p, n) < 0) s->in_credit += (int64_t)n;
			flush_input(s, b, fd, kind == K_STDIN);
			send_window(s, 0);
		} else {
			s->in_credit += (int64_t)n;
			send_window(s, 1);
		}
		return;
	case K_STDIN_EOF:
		s = find_stream(id);
		if (!s) return;
		if (s->kind == S_WRITE) write_file_finish(s);
		else if (s->kind == S_PROC) {
			s->stdin_eof = 1;
			flush_input(s, &s->stdin_buf, &s->fd_in, 1);
		}
		return;
	case K_WINDOW:
		s = find_stream(id);
		if (!s || n != 4) return;
		uint32_t c = ((uint32_t)(unsigned char)p[0] << 24) | ((uint32_t)(unsigned char)p[1] << 16) | ((uint32_t)(unsigned char)p[2] << 8) | (unsigned char)p[3];
		s->out_window += c;
		if (s->out_window > (int64_t)WINDOW_BYTES * 64) s->out_window = (int64_t)WINDOW_BYTES * 64;
		return;
	default:
		send_error_obj(K_ERROR, id, "bad_frame", "frame kind %u is not one the host may send", kind);
		return;
	}
}

static unsigned char inbuf[MAX_FRAME + 4];

static void on_disconnect(void)
{
	A.connected = 0;
	A.in_len = 0;
	A.discarding = 0;
	/* Frames queued for the old connection are dropped: a new one starts with HELLO. */
	buf_drop(&A.out, A.out.len);
	buf_drop(&A.frame_sizes, A.frame_sizes.len);
	A.out_frame_left = 0;
	for (struct stream *s = A.streams, *nx; s; s = nx) {
		nx = s->next;
		s->out_window = WINDOW_BYTES;
		s->in_outstanding = 0;
		s->in_credit = 0;
		if (s->kind != S_PROC) free_stream(s); /* file transfers die with their connection */
	}
}

static void on_connect(void)
{
	A.connected = 1;
	send_hello(K_HELLO, 0);
}

static void read_port(void)
{
	for (int rounds = 0; rounds < 16; rounds++) {
		ssize_t n;
		if (A.discarding) {
			static char junk[65536];
			n = read(A.port, junk, sizeof junk);
		} else {
			size_t want = A.in_len < HDR ? HDR - A.in_len : 0;
			if (A.in_len >= 4) {
				uint32_t len = ((uint32_t)inbuf[0] << 24) | ((uint32_t)inbuf[1] << 16) | ((uint32_t)inbuf[2] << 8) | inbuf[3];
				want = len + 4 - A.in_len;
			}
			n = read(A.port, inbuf + A.in_len, want);
		}
		if (n == 0) {
			logmsg("host disconnected");
			if (getpid() != 1) exit(0);
			on_disconnect();
			return;
		}
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR) {
				logmsg("port read: %s", strerror(errno));
				on_disconnect();
			}
			return;
		}
		if (A.discarding) continue;
		A.in_len += (size_t)n;
		if (A.in_len < 4) continue;
		uint32_t len = ((uint32_t)inbuf[0] << 24) | ((uint32_t)inbuf[1] << 16) | ((uint32_t)inbuf[2] << 8) | inbuf[3];
		if (len < 5 || len > MAX_FRAME) {
			/* Framing is lost: tell the host and drop input until it reconnects. */
			send_error_obj(K_ERROR, 0, "bad_frame_length", "frame length %u is outside 5..%u; reset the connection", len, MAX_FRAME);
			A.discarding = 1;
			A.in_len = 0;
			continue;
		}
		if (A.in_len < (size_t)len + 4) continue;
		uint32_t id = ((uint32_t)inbuf[5] << 24) | ((uint32_t)inbuf[6] << 16) | ((uint32_t)inbuf[7] << 8) | inbuf[8];
		A.in_len = 0;
		handle_frame(inbuf[4], id, (const char *)inbuf + HDR, len - 5);
	}
}

static void write_port(void)
{
	while (A.out.len) {
		ssize_t n = write(A.port, A.out.d + A.out.off, A.out_frame_left);
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR) logmsg("port write: %s", strerror(errno));
			return;
		}
		buf_drop(&A.out, (size_t)n);
		A.out_frame_left -= (size_t)n;
		if (!A.out_frame_left) {
			buf_drop(&A.frame_sizes, 4);
			if (A.frame_sizes.len) memcpy(&A.out_frame_left, A.frame_sizes.d + A.frame_sizes.off, 4), A.out_frame_left &= 0xffffffffu;
		}
	}
}

static void flush_out_blocking(int ms)
{
	uint64_t until = now_ms() + (uint64_t)ms;
	while (A.out.len && A.connected && now_ms() < until) {
		struct pollfd p = { .fd = A.port, .events = POLLOUT };
		poll(&p, 1, 50);
		write_port();
	}
}

/* ------------------------------------------------------------------ port discovery */

static int find_port(void)
{
	glob_t g;
	int fd = -1;
	const char *test_sock = getpid() != 1 ? getenv("MSB_AGENT_SOCKET") : NULL;
	if (test_sock) {
		/* Test mode on a development host: a unix socket stands in for the port. */
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		snprintf(sa.sun_path, sizeof sa.sun_path, "%s", test_sock);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
			close(fd);
			fd = -1;
		}
		if (fd >= 0) snprintf(A.port_path, sizeof A.port_path, "unix:%.50s", test_sock);
		return fd;
	}
	if (glob("/sys/class/virtio-ports/*/name", 0, NULL, &g) == 0) {
		for (size_t i = 0; i < g.gl_pathc && fd < 0; i++) {
			char name[64] = "";
			FILE *f = fopen(g.gl_pathv[i], "re");
			if (!f) continue;
			if (!fgets(name, sizeof name, f)) name[0] = 0;
			fclose(f);
			name[strcspn(name, "\n")] = 0;
			if (strcmp(name, "msb.agent")) continue;
			char dev[64];
			const char *base = g.gl_pathv[i] + strlen("/sys/class/virtio-ports/");
			snprintf(dev, sizeof dev, "/dev/%.*s", (int)strcspn(base, "/"), base);
			fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
			if (fd >= 0) snprintf(A.port_path, sizeof A.port_path, "%s", dev);
		}
		globfree(&g);
	}
	return fd;
}

/* ------------------------------------------------------------------ main loop */

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	if (getpid() == 1) {
		boot_system();
	} else {
		A.test_mode = 1;
		g_boot.t_start_ms = g_boot.t_root_ms = boot_ms();
		logmsg("not PID 1: test mode (no boot sequence; configure leaves the machine alone)");
	}

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	A.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

	uint64_t warned_at = 0, t0 = now_ms();
	struct pollfd *pfd = calloc(MAX_STREAMS * 5 + 4, sizeof *pfd);
	struct stream **owner = calloc(MAX_STREAMS * 5 + 4, sizeof *owner);
	if (!pfd || !owner) {
		logmsg("out of memory");
		for (;;) pause();
	}

	for (;;) {
		uint64_t now = now_ms();
		if (A.port < 0 && now >= A.next_port_check) {
			A.port = find_port();
			A.next_port_check = now + 20;
			if (A.port >= 0) {
				g_boot.t_ready_ms = boot_ms();
				logmsg("serving on %s (%s in %llu ms)", A.port_path, g_boot.nerrors ? "boot FAILED" : "ready",
				       (unsigned long long)g_boot.t_ready_ms);
			} else if (now - t0 > 3000 && now - warned_at > 10000) {
				logmsg("no virtio-serial port named msb.agent yet (-device virtserialport,name=msb.agent)");
				warned_at = now;
			}
		}
		/* The port reads EOF / polls HUP while the host is not connected: check it by polling. */
		if (A.port >= 0 && !A.connected && now >= A.next_port_check) {
			struct pollfd p = { .fd = A.port, .events = POLLIN };
			A.next_port_check = now + 20;
			if (poll(&p, 1, 0) >= 0 && !(p.revents & POLLHUP)) on_connect();
		}
		/* Runaway leftovers of finished execs are killed within a second, not only when the
		 * next exec starts: a fork bomb starves that exec before it could sweep. The poll
		 * timeout below is at most 1000 ms, so this runs about once a second. */
		if (g_boot.cgroup_ok && now >= A.next_sweep) {
			A.next_sweep = now + 1000;
			sweep_cgroups();
		}

		int np = 0, timeout = 1000, busy = 0;
		if (A.port >= 0 && A.connected) {
			pfd[np] = (struct pollfd){ .fd = A.port, .events = (short)(POLLIN | (A.out.len ? POLLOUT : 0)) };
			owner[np++] = NULL;
		}
		if (A.sigfd >= 0) {
			pfd[np] = (struct pollfd){ .fd = A.sigfd, .events = POLLIN };
			owner[np++] = NULL;
		}
		/* Back-pressure: a stream without window, or a full port queue, stops reading children. */
		int port_full = A.out.len > 8u * 1048576u;
		for (struct stream *s = A.streams; s; s = s->next) {
			if (s->kind == S_READ) {
				if (s->out_window > 0 && !port_full) busy = 1;
				continue;
			}
			if (s->kind != S_PROC) continue;
			if (s->exited) {
				/* finishing needs window to drain its pipes; without it, wait for WINDOW */
				if (s->out_window > 0 && !port_full) busy = 1;
				continue;
			}
			if (s->deadline_ms) {
				if (now >= s->deadline_ms) {
					s->timed_out = 1;
					s->deadline_ms = 0;
					kill_proc_tree(s, SIGKILL);
				} else if (s->deadline_ms - now < (uint64_t)timeout) {
					timeout = (int)(s->deadline_ms - now);
				}
			}
			int can_out = s->out_window > 0 && !port_full;
			if (can_out && s->fd_out >= 0) { pfd[np] = (struct pollfd){ .fd = s->fd_out, .events = POLLIN }; owner[np++] = s; }
			if (can_out && s->fd_err >= 0) { pfd[np] = (struct pollfd){ .fd = s->fd_err, .events = POLLIN }; owner[np++] = s; }
			if (s->fd_ctrl >= 0 && (can_out || s->ctrl_buf.len)) {
				pfd[np] = (struct pollfd){ .fd = s->fd_ctrl, .events = (short)((can_out ? POLLIN : 0) | (s->ctrl_buf.len ? POLLOUT : 0)) };
				owner[np++] = s;
			}
			if (!s->pty && s->fd_in >= 0 && s->stdin_buf.len) { pfd[np] = (struct pollfd){ .fd = s->fd_in, .events = POLLOUT }; owner[np++] = s; }
			if (s->pty && s->fd_in >= 0 && (s->stdin_buf.len || s->stdin_eof)) { pfd[np] = (struct pollfd){ .fd = s->fd_in, .events = POLLOUT }; owner[np++] = s; }
		}
		if (A.port >= 0 && !A.connected && timeout > 20) timeout = 20;
		if (A.port < 0 && timeout > 20) timeout = 20;
		if (busy) timeout = 0;

		int r = poll(pfd, (nfds_t)np, timeout);
		if (r < 0 && errno != EINTR) {
			logmsg("poll: %s", strerror(errno));
			usleep(10000);
			continue;
		}

		for (int i = 0; r > 0 && i < np; i++) {
			if (!pfd[i].revents) continue;
			struct stream *s = owner[i];
			if (!s) {
				if (pfd[i].fd == A.sigfd) {
					struct signalfd_siginfo si;
					while (read(A.sigfd, &si, sizeof si) == sizeof si) {}
					reap();
				} else if (pfd[i].fd == A.port) {
					if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) read_port();
					if (A.connected && (pfd[i].revents & POLLOUT)) write_port();
				}
				continue;
			}
			/* The stream may have been freed by an earlier handler in this round. */
			struct stream *t;
			for (t = A.streams; t && t != s; t = t->next) {}
			if (!t) continue;
			int fd = pfd[i].fd;
			short ev = pfd[i].revents;
			if (fd == s->fd_ctrl) {
				if (ev & POLLOUT) flush_input(s, &s->ctrl_buf, &s->fd_ctrl, 0);
				if (ev & (POLLIN | POLLHUP | POLLERR)) {
					/* Ordering rule: a cell's output reaches the host before its result. */
					if (pipe_pending(s->fd_out) || pipe_pending(s->fd_err)) {
						drain_fd(s, &s->fd_out, s->pty ? K_STDOUT : K_STDOUT);
						if (!s->pty) drain_fd(s, &s->fd_err, K_STDERR);
					}
					if (!pipe_pending(s->fd_out) && !pipe_pending(s->fd_err)) pump_fd(s, &s->fd_ctrl, K_CTRL_OUT);
				}
			} else if (fd == s->fd_out && (ev & (POLLIN | POLLHUP | POLLERR))) {
				pump_fd(s, &s->fd_out, K_STDOUT);
			} else if (fd == s->fd_err && (ev & (POLLIN | POLLHUP | POLLERR))) {
				pump_fd(s, &s->fd_err, K_STDERR);
			} else if (fd == s->fd_in && (ev & (POLLOUT | POLLERR | POLLHUP))) {
				flush_input(s, &s->stdin_buf, &s->fd_in, 1);
			}
		}

		for (struct stream *s = A.streams, *nx; s; s = nx) {
			nx = s->next;
			if (s->kind == S_PROC && s->exited) proc_try_finish(s);
			else if (s->kind == S_READ && !port_full) read_file_step(s);
		}
		if (A.port >= 0 && A.connected && A.out.len) write_port();
	}
}
