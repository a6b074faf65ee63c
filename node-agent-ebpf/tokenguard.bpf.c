// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * tokenguard kernel program: reports read-opens of AWS web-identity token files.
 *
 * It runs at the exit of open(2), openat(2) and openat2(2). For each successful open it looks up
 * the new struct file and keeps only files named "token" or "eks-pod-identity-token" that were
 * opened for reading. It then builds the path relative to the opener's root, keeps only the IRSA
 * and EKS Pod Identity token directories, and sends one struct tg_event on the "events" ring
 * buffer. It never reads the file's contents.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <stdbool.h>

#include "vmlinux_min.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "tokenguard.h"

/* GPL-compatible, because bpf_probe_read_kernel() and bpf_probe_read_user() are GPL-only helpers.
 */
char LICENSE[] SEC("license") = "GPL";

/* FMODE_READ from include/linux/fs.h. The kernel tests check that only read-opens have it. */
#define FMODE_READ 0x1

/* Max path components kept per walk, and the slot size of each (NAME_MAX + 1). */
#define MAX_COMPONENTS 32
#define NAME_LEN       256

/* Max walk steps: one per component plus one per mount crossed. */
#define MAX_WALK_STEPS 48

/*
 * The joined path is built in a buffer twice TG_PATH_LEN long, so a component of up to NAME_LEN
 * bytes written at an offset below TG_PATH_LEN stays in bounds for the verifier.
 */
#define JOIN_LEN (TG_PATH_LEN * 2)

#define container_of_mount(vfsmnt)                                                                 \
	((struct mount *)((char *)(vfsmnt)-bpf_core_field_offset(struct mount, mnt)))

/* Per-CPU working memory: the event and the path components are too big for the stack. */
struct scratch {
	struct tg_event event;
	/* Components stored by tg_collect(), kept here rather than in a register (see there). */
	__u32 count;
	__u32 comp_len[MAX_COMPONENTS];
	char comps[MAX_COMPONENTS][NAME_LEN];
	char joined[JOIN_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 512 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TG_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

/*
 * A read-open of a file by a process within repeat_window_ns of the last event for that process
 * and file is counted in TG_COUNTER_REPEATS instead of sent. A process that re-reads its token in
 * a loop then costs one event per window, and it cannot fill the ring buffer to hide another
 * process's read. The agent sets the window at load time; zero sends every open.
 */
const volatile __u64 repeat_window_ns = 1000000000ULL;

/* A process (tgid and start time, so a reused pid is a new key) and the dentry it opened. */
struct repeat_key {
	__u32 tgid;
	__u32 pad;
	__u64 start_boottime_ns;
	__u64 dentry;
};

/* Time of the last event per process and file. LRU, so old processes age out by themselves. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct repeat_key);
	__type(value, __u64);
} recent_opens SEC(".maps");

/*
 * Context of the syscalls:sys_exit_* tracepoints, from
 * /sys/kernel/tracing/events/syscalls/sys_exit_openat/format: 8 bytes of common fields, the
 * syscall number at offset 8 and the return value at offset 16. The kernel's struct
 * syscall_trace_exit has this layout in the BTF of both Linux 6.1 and 6.18.
 */
struct sys_exit_args {
	__u64 common;
	__s32 syscall_nr;
	__s32 padding;
	__s64 ret;
};

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);

	if (value)
		*value += 1;
}

/* Compares len bytes of a buffer with a string literal of that length. */
static __always_inline bool bytes_equal(const char *buf, const char *literal, __u32 len)
{
	for (__u32 i = 0; i < len; i++) {
		if (buf[i] != literal[i])
			return false;
	}
	return true;
}

/* Returns true when the dentry is named "token" or "eks-pod-identity-token". */
static __always_inline bool is_token_name(struct dentry *dentry)
{
	char name[24] = {};
	__u32 len = BPF_CORE_READ(dentry, d_name.len);
	const unsigned char *ptr = BPF_CORE_READ(dentry, d_name.name);

	/* Compare the length first, so most files cost one read. */
	if (len == 5) {
		if (bpf_probe_read_kernel(name, 5, ptr) < 0)
			return false;
		return bytes_equal(name, "token", 5);
	}

	if (len == 22) {
		if (bpf_probe_read_kernel(name, 22, ptr) < 0)
			return false;
		return bytes_equal(name, "eks-pod-identity-token", 22);
	}
	return false;
}

/* Compares path component idx with a string literal. */
#define COMP_IS(s, idx, literal) comp_equals((s), (idx), (literal), sizeof(literal) - 1)

static __always_inline bool comp_equals(struct scratch *s, __u32 idx, const char *literal,
					__u32 literal_len)
{
	if (s->comp_len[idx & (MAX_COMPONENTS - 1)] != literal_len)
		return false;
	return bytes_equal(s->comps[idx & (MAX_COMPONENTS - 1)], literal, literal_len);
}

/* Bits of the value returned by tg_collect() and tg_join(). */
#define COLLECT_COUNT_MASK 0xff
#define COLLECT_COMPLETE   0x100
#define JOIN_LEN_MASK	   0xffff
#define JOIN_TRUNCATED	   0x10000

/*
 * Walks from a dentry up to the task's root, storing component names leaf first
 * in s->comps. The walk crosses mounts through mnt_parent and mnt_mountpoint, and stops at the
 * task's root (fs->root, which differs after chroot) or at the root mount of the mount namespace,
 * the mount that is its own parent. Returns the number of components, with COLLECT_COMPLETE set
 * when the walk reached a root before running out of steps or slots.
 *
 * This is a global function so the verifier checks it once, not once per caller and per
 * state. Kernel pointers are passed as integers because global function pointer arguments
 * must point to memory the verifier can check.
 */
__attribute__((noinline)) int tg_collect(struct scratch *s, __u64 dentry_addr, __u64 vfsmnt_addr,
					 __u64 root_dentry_addr, __u64 root_mnt_addr)
{
	struct dentry *dentry = (struct dentry *)dentry_addr;
	struct vfsmount *vfsmnt = (struct vfsmount *)vfsmnt_addr;
	struct mount *mnt = container_of_mount(vfsmnt);

	if (!s)
		return 0;

	/*
	 * The component count lives in s->count: the verifier does not track map memory, so each
	 * step reads it back as an unknown bounded value and the states of different steps can be
	 * pruned. A count in a register would be tracked exactly and multiply the states.
	 */
	s->count = 0;
#pragma clang loop unroll(disable)
	for (int step = 0; step < MAX_WALK_STEPS; step++) {
		struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
		struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
		__u32 n = s->count;

		/* The task's own root ends the walk, as in d_path(). */
		if ((__u64)dentry == root_dentry_addr && (__u64)vfsmnt == root_mnt_addr)
			return (n & COLLECT_COUNT_MASK) | COLLECT_COMPLETE;

		/* At the root of a mount: stop at the namespace root, else go to the mount point.
		 */
		if (dentry == mnt_root) {
			struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);

			if (mnt_parent == mnt)
				return (n & COLLECT_COUNT_MASK) | COLLECT_COMPLETE;
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = mnt_parent;
			vfsmnt = (struct vfsmount *)((char *)mnt_parent +
						     bpf_core_field_offset(struct mount, mnt));
			continue;
		}

		/* A filesystem root that is not a mount root is a disconnected dentry. */
		if (dentry == parent)
			return (n & COLLECT_COUNT_MASK) | COLLECT_COMPLETE;

		/* Keep the name of this component. */
		if (n >= MAX_COMPONENTS)
			return MAX_COMPONENTS;
		const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
		long copied =
		    bpf_probe_read_kernel_str(s->comps[n & (MAX_COMPONENTS - 1)], NAME_LEN, name);

		s->comp_len[n & (MAX_COMPONENTS - 1)] = copied > 0 ? copied - 1 : 0;
		s->count = n + 1;
		dentry = parent;
	}
	return s->count & COLLECT_COUNT_MASK;
}

/*
 * Joins the first n components of s->comps, root first, into s->joined as "/a/b/c". Returns
 * the length without the NUL, at most TG_PATH_LEN - 1, with JOIN_TRUNCATED set when the path
 * was cut there. Global for the same reason as tg_collect().
 */
__attribute__((noinline)) int tg_join(struct scratch *s, __u32 n)
{
	__u32 off = 0;
	int truncated = 0;

	if (!s)
		return 0;

	/* The root directory itself has no components. */
	if (n == 0) {
		s->joined[0] = '/';
		s->joined[1] = '\0';
		return 1;
	}

	for (__u32 i = 0; i < MAX_COMPONENTS; i++) {
		if (i >= n)
			break;
		if (off >= TG_PATH_LEN - 1) {
			truncated = JOIN_TRUNCATED;
			break;
		}

		/* Write the separator, then the component after it. */
		__u32 idx = (n - 1 - i) & (MAX_COMPONENTS - 1);
		__u32 len = s->comp_len[idx] & (NAME_LEN - 1);
		__u32 pos = off;

		/*
		 * clang drops a mask it can prove redundant, but the verifier needs it on the
		 * register used as the offset, so hide the value from the optimizer first.
		 */
		barrier_var(pos);
		pos &= TG_PATH_LEN - 1;
		s->joined[pos] = '/';
		pos++;
		barrier_var(pos);
		pos &= TG_PATH_LEN - 1;
		bpf_probe_read_kernel(&s->joined[pos], len, s->comps[idx]);
		off += 1 + len;
	}

	/* Cut at the buffer end and terminate. */
	if (off > TG_PATH_LEN - 1) {
		off = TG_PATH_LEN - 1;
		truncated = JOIN_TRUNCATED;
	}
	barrier_var(off);
	s->joined[off & (JOIN_LEN - 1)] = '\0';
	return off | truncated;
}

/* Collects the components of a kernel struct path for a task's view of the filesystem. */
static __always_inline __u32 collect_components(struct scratch *s, const struct path *path,
						struct task_struct *task, bool *complete)
{
	__u64 dentry = (__u64)BPF_CORE_READ(path, dentry);
	__u64 vfsmnt = (__u64)BPF_CORE_READ(path, mnt);
	__u64 root_dentry = (__u64)BPF_CORE_READ(task, fs, root.dentry);
	__u64 root_mnt = (__u64)BPF_CORE_READ(task, fs, root.mnt);
	int ret = tg_collect(s, dentry, vfsmnt, root_dentry, root_mnt);

	*complete = ret & COLLECT_COMPLETE;
	return ret & COLLECT_COUNT_MASK;
}

static __always_inline __u32 join_components(struct scratch *s, __u32 n, bool *truncated)
{
	int ret = tg_join(s, n);

	*truncated = ret & JOIN_TRUNCATED;
	return ret & JOIN_LEN_MASK;
}

/*
 * Writes the path of the task's executable (mm->exe_file) into out, TG_EXE_LEN bytes. Returns
 * the length and sets *truncated when the path did not fit or the walk did not reach a root.
 */
static __always_inline __u16 exe_path(struct scratch *s, struct task_struct *task, char *out,
				      bool *truncated)
{
	bool complete;
	bool cut;
	__u32 n;
	__u32 len;

	struct file *exe = BPF_CORE_READ(task, mm, exe_file);

	*truncated = false;
	out[0] = '\0';
	if (!exe)
		return 0;

	/* Walk the executable's dentries and join them. */
	n = collect_components(s, &exe->f_path, task, &complete);
	len = join_components(s, n, &cut);

	/* Copy into the smaller exe buffer, cutting again if needed. */
	if (len > TG_EXE_LEN - 1) {
		len = TG_EXE_LEN - 1;
		cut = true;
	}
	bpf_probe_read_kernel(out, TG_EXE_LEN, s->joined);
	out[len & (TG_EXE_LEN - 1)] = '\0';
	*truncated = cut || !complete;
	return len;
}

/*
 * Returns true when the components of a token file match an AWS token directory:
 *   .../eks.amazonaws.com/serviceaccount/<file>           (IRSA, in the pod)
 *   .../pods.eks.amazonaws.com/serviceaccount/<file>      (EKS Pod Identity, in the pod)
 *   .../kubernetes.io~projected/aws-iam-token/<file>      (IRSA, kubelet host path)
 *   .../kubernetes.io~projected/eks-pod-identity-token/<file>
 * with one optional "..<timestamp>" directory before <file>, which is where the kubelet's
 * atomic writer keeps the real file.
 */
static __always_inline bool is_aws_token_dir(struct scratch *s, __u32 n)
{
	__u32 dir = 1;

	/* Skip the kubelet's timestamped directory. */
	if (n > 1 && s->comp_len[1] > 2 && s->comps[1][0] == '.' && s->comps[1][1] == '.')
		dir = 2;
	if (n < dir + 2)
		return false;

	/* Service account directories as mounted inside the pod. */
	if (COMP_IS(s, dir, "serviceaccount"))
		return COMP_IS(s, dir + 1, "eks.amazonaws.com") ||
		       COMP_IS(s, dir + 1, "pods.eks.amazonaws.com");

	/* Projected volume directories on the node. */
	if (COMP_IS(s, dir, "aws-iam-token") || COMP_IS(s, dir, "eks-pod-identity-token"))
		return COMP_IS(s, dir + 1, "kubernetes.io~projected");
	return false;
}

/* Fills the process fields of the event: ids, times, names, executables and arguments. */
static __always_inline void fill_process(struct scratch *s, struct task_struct *task)
{
	struct tg_event *ev = &s->event;
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	struct task_struct *parent = BPF_CORE_READ(task, real_parent, group_leader);
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	bool truncated;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	/* Identifiers of the opener and its parent. */
	ev->tgid = pid_tgid >> 32;
	ev->tid = (__u32)pid_tgid;
	ev->ppid = BPF_CORE_READ(parent, tgid);
	ev->uid = (__u32)uid_gid;
	ev->gid = uid_gid >> 32;
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->mnt_ns_inum = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	ev->start_boottime_ns = BPF_CORE_READ(leader, start_boottime);
	ev->parent_start_boottime_ns = BPF_CORE_READ(parent, start_boottime);

	/* Names: the group leader's comm names the program, while a thread's comm is often a
	 * worker name (Python and JVM threads) that would split one program into many values. */
	BPF_CORE_READ_STR_INTO(&ev->comm, leader, comm);
	BPF_CORE_READ_STR_INTO(&ev->parent_comm, parent, comm);

	/* Executables, walked like the token path: short-lived openers are gone before /proc. */
	ev->exe_len = exe_path(s, task, ev->exe, &truncated);
	if (truncated)
		ev->truncated |= TG_TRUNCATED_EXE;
	ev->parent_exe_len = exe_path(s, parent, ev->parent_exe, &truncated);
	if (truncated)
		ev->truncated |= TG_TRUNCATED_PARENT_EXE;

	/* Command line from the opener's memory. Kernel threads have no mm and get none. */
	ev->args_len = 0;
	if (mm) {
		unsigned long arg_start = BPF_CORE_READ(mm, arg_start);
		unsigned long arg_end = BPF_CORE_READ(mm, arg_end);
		unsigned long len = arg_end - arg_start;

		if (arg_end <= arg_start)
			len = 0;
		if (len > TG_ARGS_LEN) {
			len = TG_ARGS_LEN;
			ev->truncated |= TG_TRUNCATED_ARGS;
		}
		if (len > 0 && bpf_probe_read_user(ev->args, len, (void *)arg_start) == 0)
			ev->args_len = len;
	}
}

static __always_inline int handle_open_exit(long ret, __u8 syscall)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file **fds;
	struct file *file = NULL;
	struct dentry *dentry;
	struct scratch *s;
	struct tg_event *ev;
	struct repeat_key repeat;
	__u64 *last;
	__u64 now;
	__u32 zero = 0;
	__u32 max_fds;
	__u32 n;
	bool complete;
	bool truncated;

	/* Failed opens return a negative errno. */
	if (ret < 0)
		return 0;

	/* Resolve the new fd to its struct file: task->files->fdt->fd[ret]. */
	max_fds = BPF_CORE_READ(task, files, fdt, max_fds);
	if ((__u64)ret >= max_fds)
		return 0;
	fds = BPF_CORE_READ(task, files, fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[ret]) < 0 || !file)
		return 0;

	/* First filter, cheap: the file name, then read access. */
	dentry = BPF_CORE_READ(file, f_path.dentry);
	if (!is_token_name(dentry))
		return 0;
	if (!(BPF_CORE_READ(file, f_mode) & FMODE_READ))
		return 0;

	/* Repeats of a recent event are only counted, before the costly path walk. */
	now = bpf_ktime_get_boot_ns();
	repeat.tgid = bpf_get_current_pid_tgid() >> 32;
	repeat.pad = 0;
	repeat.start_boottime_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	repeat.dentry = (__u64)dentry;
	last = bpf_map_lookup_elem(&recent_opens, &repeat);
	if (last && now - *last < repeat_window_ns) {
		count(TG_COUNTER_REPEATS);
		return 0;
	}

	/* Walk the path up to the opener's root. */
	s = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!s)
		return 0;
	n = collect_components(s, &file->f_path, task, &complete);

	/* Second filter on the directory names, before filling the event. */
	if (!is_aws_token_dir(s, n)) {
		count(TG_COUNTER_PATH_FILTERED);
		return 0;
	}

	/* Open details and the joined path. */
	ev = &s->event;
	ev->timestamp_ns = now;
	ev->fd = ret;
	ev->syscall = syscall;
	ev->f_flags = BPF_CORE_READ(file, f_flags);
	ev->f_mode = BPF_CORE_READ(file, f_mode);
	ev->truncated = 0;
	ev->reserved[0] = 0;
	ev->reserved[1] = 0;
	ev->path_len = join_components(s, n, &truncated);
	if (truncated || !complete)
		ev->truncated |= TG_TRUNCATED_PATH;
	bpf_probe_read_kernel(ev->path, TG_PATH_LEN, s->joined);

	/* The exe walks reuse s->comps, so they run after the path is joined. */
	fill_process(s, task);

	/* Send, counting a full ring buffer as lost. A lost open is not recorded as recent, so the
	 * process's next open is sent. */
	if (bpf_ringbuf_output(&events, ev, sizeof(*ev), 0) < 0) {
		count(TG_COUNTER_LOST);
		return 0;
	}
	count(TG_COUNTER_SUBMITTED);
	if (repeat_window_ns)
		bpf_map_update_elem(&recent_opens, &repeat, &now, BPF_ANY);
	return 0;
}

/*
 * Hooks: the syscalls:sys_exit_open{,at,at2} tracepoints. Tracepoints are a stable interface,
 * are loadable where fentry/fexit, LSM and kprobe programs are not, and at syscall exit the new
 * fd is already installed in the task's fd table. They need CONFIG_FTRACE_SYSCALLS.
 * sys_exit_openat2 exists from Linux 5.6, when openat2(2) was added, and sys_exit_open only on
 * architectures that have the legacy open(2) syscall, such as x86_64. The program as a whole
 * needs 5.8 for bpf_ktime_get_boot_ns() and the ring buffer. It is tested on 6.18, and its
 * relocations are checked against Debian's 6.1 BTF.
 */

/* Legacy open(2), which the loader attaches only where the tracepoint exists. */
SEC("tracepoint/syscalls/sys_exit_open")
int tg_sys_exit_open(struct sys_exit_args *ctx)
{
	return handle_open_exit(ctx->ret, TG_SYSCALL_OPEN);
}

/* openat(2): what glibc and musl use for open(). */
SEC("tracepoint/syscalls/sys_exit_openat")
int tg_sys_exit_openat(struct sys_exit_args *ctx)
{
	return handle_open_exit(ctx->ret, TG_SYSCALL_OPENAT);
}

/* openat2(2), Linux 5.6 and later. */
SEC("tracepoint/syscalls/sys_exit_openat2")
int tg_sys_exit_openat2(struct sys_exit_args *ctx)
{
	return handle_open_exit(ctx->ret, TG_SYSCALL_OPENAT2);
}
