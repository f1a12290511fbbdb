#include "nl_exchange.h"

#include <errno.h>
#include <linux/netlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

int nl_exchange_open(void)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
	if (fd < 0)
		return -errno;
	struct sockaddr_nl local = { .nl_family = AF_NETLINK };
	if (bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	/* Acknowledgements without a copy of the request: many elements make a large request. */
	int one = 1;
	setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
	int rcvbuf = 1 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	return fd;
}

void nl_exchange_close(int fd)
{
	if (fd >= 0)
		close(fd);
}

int nl_exchange(int fd, const void *buf, size_t len, char **out, size_t *out_len)
{
	*out = NULL;
	*out_len = 0;
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	ssize_t sent;
	do
		sent = sendto(fd, buf, len, 0, (struct sockaddr *)&kernel, sizeof(kernel));
	while (sent < 0 && errno == EINTR);
	if (sent < 0)
		return -errno;
	if ((size_t)sent != len)
		return -EMSGSIZE;

	size_t cap = 131072, used = 0;
	char *acc = malloc(cap);
	if (!acc)
		return -ENOMEM;
	for (;;) {
		if (cap - used < 65536) {
			char *grown = realloc(acc, cap * 2);
			if (!grown) {
				free(acc);
				return -ENOMEM;
			}
			acc = grown;
			cap *= 2;
		}
		/* MSG_TRUNC: the whole reply's length, so a cut one is told, not parsed. */
		ssize_t n = recv(fd, acc + used, cap - used, MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n < 0) {
			int e = errno;
			free(acc);
			return -e;
		}
		if (n == 0)
			break;
		if ((size_t)n > cap - used) {
			free(acc);
			return -EMSGSIZE;
		}
		used += (size_t)n;
	}
	*out = acc;
	*out_len = used;
	return 0;
}
