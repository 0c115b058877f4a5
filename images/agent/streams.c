/* msb guest agent: growable byte buffers, frames to the host (queued for the port, with the
 * per-stream WINDOW credit the agent owes) and the table of open streams. */
#include "agent.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ buffers */

int buf_put(struct buf *b, const void *p, size_t n)
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

void buf_drop(struct buf *b, size_t n)
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

/* ------------------------------------------------------------------ frames out */

void enqueue(uint8_t kind, uint32_t stream, const void *payload, size_t n)
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

void send_json(uint8_t kind, uint32_t stream, jbuf *jb)
{
	if (jb->err) {
		static const char e[] = "{\"error\":{\"code\":\"internal\",\"message\":\"reply too large or out of memory\"}}";
		enqueue(kind, stream, e, sizeof e - 1);
	} else {
		enqueue(kind, stream, jb->buf, jb->len);
	}
	jb_free(jb);
}

void send_error_obj(uint8_t kind, uint32_t stream, const char *code, const char *fmt, ...)
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

void reply_ok(uint32_t id)
{
	static const char ok[] = "{\"ok\":true}";
	enqueue(K_RESPONSE, id, ok, sizeof ok - 1);
}

const char *errno_code(int e)
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

void send_window(struct stream *s, int force)
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

struct stream *find_stream(uint32_t id)
{
	for (struct stream *s = A.streams; s; s = s->next)
		if (s->id == id) return s;
	return NULL;
}

struct stream *new_stream(uint32_t id, enum skind kind)
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

void close_fd(int *fd)
{
	if (*fd >= 0) close(*fd);
	*fd = -1;
}

void free_stream(struct stream *s)
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
