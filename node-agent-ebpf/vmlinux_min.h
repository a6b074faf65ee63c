/* SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0 */
/*
 * Minimal kernel type declarations for CO-RE.
 *
 * Each struct lists only the fields that tokenguard.bpf.c reads. The
 * preserve_access_index attribute makes clang emit BTF relocations for every
 * field access, and the loader rewrites the offsets against the running
 * kernel's BTF (/sys/kernel/btf/vmlinux). Field order and offsets here are
 * therefore irrelevant, but field names and types must match the kernel's.
 *
 * Checked against the BTF of Linux 6.18 and Debian's 6.1.176, which have these
 * fields under the same names. In 6.18 some of them sit in anonymous unions
 * (file.f_path, dentry.d_name), which CO-RE resolves by name.
 */
#ifndef TOKENGUARD_VMLINUX_MIN_H
#define TOKENGUARD_VMLINUX_MIN_H

#include <linux/types.h>

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct qstr {
	__u32 len;
	const unsigned char *name;
};

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
};

struct vfsmount {
	struct dentry *mnt_root;
};

struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
};

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
};

struct file {
	unsigned int f_mode;
	unsigned int f_flags;
	struct path f_path;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct fs_struct {
	struct path root;
};

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
	struct file *exe_file;
};

struct ns_common {
	unsigned int inum;
};

struct mnt_namespace {
	struct ns_common ns;
};

struct nsproxy {
	struct mnt_namespace *mnt_ns;
};

struct task_struct {
	int pid;
	int tgid;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	__u64 start_boottime;
	char comm[16];
	struct mm_struct *mm;
	struct fs_struct *fs;
	struct files_struct *files;
	struct nsproxy *nsproxy;
};

#pragma clang attribute pop

#endif /* TOKENGUARD_VMLINUX_MIN_H */
