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

int nl_exchange(int fd, const void *buf, size_t len, char **acc, size_t *cap, size_t *out_len)
{
	*out_len = 0;
	/* A batch is one datagram: the send buffer must hold it (forced past wmem_max with CAP_NET_ADMIN, as nft does). */
	if (len > 65536) {
		int have = 0;
		socklen_t size = sizeof(have);
		if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &have, &size) == 0 && (size_t)have < len + 4096) {
			int want = (int)(len + 4096);
			if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof(want)) < 0)
				setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof(want));
		}
	}
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	ssize_t sent;
	do
		sent = sendto(fd, buf, len, 0, (struct sockaddr *)&kernel, sizeof(kernel));
	while (sent < 0 && errno == EINTR);
	if (sent < 0)
		return -errno;
	if ((size_t)sent != len)
		return -EMSGSIZE;

	size_t used = 0;
	for (;;) {
		/* Room for the largest reply the kernel sends in one datagram. */
		if (*acc == NULL || *cap - used < 65536) {
			size_t grown_cap = *cap == 0 ? 131072 : *cap * 2;
			char *grown = realloc(*acc, grown_cap);
			if (!grown)
				return -ENOMEM;
			*acc = grown;
			*cap = grown_cap;
		}
		/* MSG_TRUNC: the whole reply's length, so a cut one is told, not parsed. */
		ssize_t n = recv(fd, *acc + used, *cap - used, MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		if ((size_t)n > *cap - used)
			return -EMSGSIZE;
		used += (size_t)n;
	}
	*out_len = used;
	return 0;
}
