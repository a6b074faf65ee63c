// SPDX-License-Identifier: Apache-2.0
/*
 * Opens and closes one file COUNT times and prints the mean wall time of one
 * open+close pair in nanoseconds. The open-overhead benchmark runs it with and
 * without the agent's eBPF program attached.
 *
 *   openloop PATH COUNT
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	char *end;
	long count;
	double start;

	if (argc != 3) {
		fprintf(stderr, "usage: openloop PATH COUNT\n");
		return 2;
	}
	count = strtol(argv[2], &end, 10);
	if (*end != '\0' || count <= 0) {
		fprintf(stderr, "openloop: invalid COUNT \"%s\": expected a positive integer\n",
			argv[2]);
		return 2;
	}

	start = now_ns();
	for (long i = 0; i < count; i++) {
		int fd = open(argv[1], O_RDONLY | O_CLOEXEC);

		if (fd < 0) {
			fprintf(stderr, "openloop: failed to open %s: %s\n", argv[1],
				strerror(errno));
			return 1;
		}
		close(fd);
	}
	printf("%.0f\n", (now_ns() - start) / (double)count);
	return 0;
}
