/* msb guest agent: shared declarations. See README.md and docs/agent-protocol.md. */
#ifndef MSB_AGENT_H
#define MSB_AGENT_H

#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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

#endif
