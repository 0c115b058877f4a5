/* msb guest agent: the exec op — environment, rlimits, cgroup, pty or pipes, credentials and
 * the control channel of a new process; sweeping the cgroups of finished execs. */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

extern char **environ;

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

void env_free(char **e)
{
	if (!e) return;
	for (char **p = e; *p; p++) free(*p);
	free(e);
}

/* Applies env given as {"K":"V"} or ["K=V"]; returns an error message or NULL. */
const char *env_apply(char ***envp, size_t *n, const jval *v)
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
void sweep_cgroups(void)
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

void op_exec(uint32_t id, const jval *req)
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
