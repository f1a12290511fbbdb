/* A netfilter netlink socket: send one request buffer, collect every reply the kernel queued. */
#ifndef NL_EXCHANGE_H
#define NL_EXCHANGE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A NETLINK_NETFILTER socket of this process's network namespace; -errno on failure. */
int nl_exchange_open(void);
void nl_exchange_close(int fd);

/*
 * Sends `len` bytes of netlink messages and reads the replies into *acc (of *cap bytes, grown with
 * realloc when needed and kept by the caller for the next exchange); *out_len is their length.
 * The kernel handles a netfilter request (and a batch) inside the send call, so every reply is
 * queued when it returns: they are read without waiting. 0 or -errno.
 */
int nl_exchange(int fd, const void *buf, size_t len, char **acc, size_t *cap, size_t *out_len);

#ifdef __cplusplus
}
#endif

#endif
