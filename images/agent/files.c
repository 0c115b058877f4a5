/* msb guest agent: the read_file, write_file (temp file + rename) and list_dir ops. */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ files */

static int path_arg(uint32_t id, const jval *req, const char **path)
{
	if (json_str(req, "path", path) != 1 || (*path)[0] != '/') {
		reply_error(id, "bad_request", "path must be an absolute path");
		return -1;
	}
	return 0;
}

void op_read_file(uint32_t id, const jval *req)
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
void read_file_step(struct stream *s)
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

void op_write_file(uint32_t id, const jval *req)
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

void write_file_data(struct stream *s, const char *p, size_t n)
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

void write_file_finish(struct stream *s)
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

void op_list_dir(uint32_t id, const jval *req)
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
