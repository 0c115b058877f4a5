/* msb guest agent: running processes — signals, output pumped to the host within each
 * stream's window, input flushed to the child, reaping, EXIT; the signal and resize ops. */
#include "agent.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

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

void kill_proc_tree(struct stream *s, int sig)
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
int pump_fd(struct stream *s, int *fd, uint8_t kind)
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
int drain_fd(struct stream *s, int *fd, uint8_t kind)
{
	for (int i = 0; i < 64; i++) {
		int r = pump_fd(s, fd, kind);
		if (r == 0 || r == -1) return 1;
		if (r == -2) return 0;
	}
	return 0;
}

int pipe_pending(int fd)
{
	int n = 0;
	if (fd < 0 || ioctl(fd, FIONREAD, &n) < 0) return 0;
	return n;
}

/* After the child exits: deliver what is already in its pipes, then EXIT. Output written
 * later by stray background processes is not waited for. */
int proc_try_finish(struct stream *s)
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

void reap(void)
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
void flush_input(struct stream *s, struct buf *b, int *fd, int is_stdin)
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

void op_signal(uint32_t id, const jval *req)
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

void op_resize(uint32_t id, const jval *req)
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
