/* msb guest agent: PID 1. Boots the guest (boot.c), then serves the agent protocol
 * (docs/agent-protocol.md) on the virtio-serial port "msb.agent". Single-threaded: one
 * poll loop over the port, a signalfd and the children's pipes. Every input from the host is
 * treated as hostile: bounded frames, bounded JSON, bounded buffers, and errors become
 * error frames rather than crashes. This file: frames from the host, port discovery and the
 * main loop; the ops and the stream machinery are in the files agent.h lists. */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct agent A = { .port = -1, .sigfd = -1 };

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

void flush_out_blocking(int ms)
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
