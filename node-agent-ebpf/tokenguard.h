/* SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0 */
/*
 * Event layout shared by the eBPF program and the agent.
 *
 * The agent mirrors struct tg_event as a #[repr(C)] Rust type in
 * node-agent/src/ebpf/raw.rs, and both sides assert its size. Change the two
 * together.
 */
#ifndef TOKENGUARD_H
#define TOKENGUARD_H

#include <linux/types.h>

#define TG_COMM_LEN 16
#define TG_PATH_LEN 512
#define TG_EXE_LEN  256
#define TG_ARGS_LEN 256

/* Syscall whose exit produced the event (tg_event.syscall). */
enum tg_syscall {
	TG_SYSCALL_OPEN = 1,
	TG_SYSCALL_OPENAT = 2,
	TG_SYSCALL_OPENAT2 = 3,
};

/* Bits of tg_event.truncated: the field was cut to its buffer size. */
enum tg_truncated {
	TG_TRUNCATED_PATH = 1 << 0,
	TG_TRUNCATED_EXE = 1 << 1,
	TG_TRUNCATED_PARENT_EXE = 1 << 2,
	TG_TRUNCATED_ARGS = 1 << 3,
};

/* Indexes of the per-CPU "counters" array map. */
enum tg_counter {
	/* Events that matched but found the ring buffer full. */
	TG_COUNTER_LOST = 0,
	/* Read-opens of a file named like a token outside the AWS token directories. */
	TG_COUNTER_PATH_FILTERED = 1,
	/* Events written to the ring buffer. */
	TG_COUNTER_SUBMITTED = 2,
	/* Token opens folded into an earlier event of the same process and file. */
	TG_COUNTER_REPEATS = 3,
	TG_COUNTER_MAX = 4,
};

/*
 * One read-open of an AWS web-identity token file.
 *
 * "Parent" is the thread-group leader of the opener's real parent. Start
 * times are the group leaders' start_boottime, so they match field 22 of
 * /proc/<pid>/stat. Every string is NUL-terminated within its buffer, its
 * *_len excludes the NUL, and bytes after the NUL are unspecified.
 */
struct tg_event {
	/* bpf_ktime_get_boot_ns() at syscall exit. */
	__u64 timestamp_ns;
	/* cgroup v2 id of the opener (inode number of its cgroup directory). */
	__u64 cgroup_id;
	__u64 start_boottime_ns;
	__u64 parent_start_boottime_ns;
	__u32 tgid;
	__u32 tid;
	__u32 ppid;
	/* Real uid and gid in the initial user namespace. */
	__u32 uid;
	__u32 gid;
	/* Inode number of the opener's mount namespace, as in /proc/<pid>/ns/mnt. */
	__u32 mnt_ns_inum;
	/* File descriptor returned by the syscall. */
	__s32 fd;
	/* struct file f_flags (open flags as the kernel kept them) and f_mode. */
	__u32 f_flags;
	__u32 f_mode;
	__u16 path_len;
	__u16 exe_len;
	__u16 parent_exe_len;
	/* Bytes of args, including the NUL after each argument. */
	__u16 args_len;
	/* enum tg_syscall. */
	__u8 syscall;
	/* enum tg_truncated bits. */
	__u8 truncated;
	__u8 reserved[2];
	/* comm of the opener's thread-group leader, which names the program. */
	char comm[TG_COMM_LEN];
	char parent_comm[TG_COMM_LEN];
	/* Path of the opened file relative to the opener's root, symlinks resolved. */
	char path[TG_PATH_LEN];
	/* Path of the opener's executable (mm->exe_file). */
	char exe[TG_EXE_LEN];
	char parent_exe[TG_EXE_LEN];
	/* Command line, mm->arg_start..arg_end, NUL-separated. */
	char args[TG_ARGS_LEN];
};

#define TG_EVENT_SIZE 1392

_Static_assert(sizeof(struct tg_event) == TG_EVENT_SIZE, "tg_event size changed: update raw.rs");

#endif /* TOKENGUARD_H */
