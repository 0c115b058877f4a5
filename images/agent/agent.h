/* msb guest agent: shared declarations. See README.md and docs/agent-protocol.md. */
#ifndef MSB_AGENT_H
#define MSB_AGENT_H

#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "json.h"

#define AGENT_VERSION "0.1.0"
#define PROTOCOL_VERSION 1

#define MAX_FRAME 1048576u          /* length field bound: kind + stream + payload */
#define HDR 9u                      /* u32 length, u8 kind, u32 stream */
#define WINDOW_BYTES 262144u        /* initial per-stream window, both directions */
#define READ_CHUNK 65536u           /* largest data frame the agent sends */
#define MAX_STREAMS 128
#define MAX_BOOT_MSGS 16

enum kind {
	K_HELLO = 1,
	K_REQUEST = 2,
	K_RESPONSE = 3,
	K_STDOUT = 4,
	K_STDERR = 5,
	K_STDIN = 6,
	K_STDIN_EOF = 7,
	K_EXIT = 8,
	K_CTRL_IN = 9,
	K_CTRL_OUT = 10,
	K_WINDOW = 11,
	K_ERROR = 12,
};

/* Boot results, reported in HELLO. */
struct boot {
	const char *errors[MAX_BOOT_MSGS];
	int nerrors;
	const char *warnings[MAX_BOOT_MSGS];
	int nwarnings;
	uint64_t t_start_ms;  /* CLOCK_BOOTTIME when the agent started */
	uint64_t t_root_ms;   /* after the root switch */
	uint64_t t_ready_ms;  /* port opened */
	int root_ok;          /* the image's root filesystem is our root */
	int scratch_fd;       /* directory on the scratch fs (statfs for metrics), or -1 */
	int cgroup_ok;
	uint64_t mem_limit;   /* memory.max of the user cgroup, 0 if unset */
	uint64_t pids_limit;
};

extern struct boot g_boot;

void boot_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void boot_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint64_t now_ms(void);   /* CLOCK_MONOTONIC */
uint64_t boot_ms(void);  /* CLOCK_BOOTTIME */

/* boot.c */
void boot_system(void);
int net_configure(const char *ifname, const char *cidr, const char *gw, char *err, size_t errlen);
int write_resolv_conf(const char *const *dns, int n);
int write_file_str(const char *path, const char *s);
int mkdir_p(const char *path, mode_t mode);

/* ------------------------------------------------------------------ serving the protocol
 * agent.c: frames in, port, main loop; streams.c: buffers, frames out, stream table;
 * process.c: running processes, signal/resize; exec.c; files.c; configure.c (configure,
 * metrics, HELLO, shutdown). Single-threaded: everything below runs on the poll loop. */

struct buf {
	char *d;
	size_t off, len, cap; /* live bytes are d[off .. off+len) */
};

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

/* The agent's one state (defined in agent.c): the port, the output queue, the streams. */
struct agent {
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
};

extern struct agent A;

/* streams.c */
int buf_put(struct buf *b, const void *p, size_t n);
void buf_drop(struct buf *b, size_t n);
void enqueue(uint8_t kind, uint32_t stream, const void *payload, size_t n);
void send_json(uint8_t kind, uint32_t stream, jbuf *jb);
void send_error_obj(uint8_t kind, uint32_t stream, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
#define reply_error(id, code, ...) send_error_obj(K_RESPONSE, id, code, __VA_ARGS__)
void reply_ok(uint32_t id);
const char *errno_code(int e);
void send_window(struct stream *s, int force);
struct stream *find_stream(uint32_t id);
struct stream *new_stream(uint32_t id, enum skind kind);
void close_fd(int *fd);
void free_stream(struct stream *s);

/* process.c */
void kill_proc_tree(struct stream *s, int sig);
int pump_fd(struct stream *s, int *fd, uint8_t kind);
int drain_fd(struct stream *s, int *fd, uint8_t kind);
int pipe_pending(int fd);
int proc_try_finish(struct stream *s);
void reap(void);
void flush_input(struct stream *s, struct buf *b, int *fd, int is_stdin);
void op_signal(uint32_t id, const jval *req);
void op_resize(uint32_t id, const jval *req);

/* exec.c */
void env_free(char **e);
const char *env_apply(char ***envp, size_t *n, const jval *v);
void sweep_cgroups(void);
void op_exec(uint32_t id, const jval *req);

/* files.c */
void op_read_file(uint32_t id, const jval *req);
void read_file_step(struct stream *s);
void op_write_file(uint32_t id, const jval *req);
void write_file_data(struct stream *s, const char *p, size_t n);
void write_file_finish(struct stream *s);
void op_list_dir(uint32_t id, const jval *req);

/* configure.c */
void op_configure(uint32_t id, const jval *req);
void op_metrics(uint32_t id);
void send_hello(uint8_t kind, uint32_t id);
void op_shutdown(uint32_t id, const jval *req);

/* agent.c */
void flush_out_blocking(int ms);

#endif
