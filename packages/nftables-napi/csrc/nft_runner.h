/* Plain C over libnftables: one context, JSON in, JSON out, errors captured. No N-API here. */
#ifndef NFT_RUNNER_H
#define NFT_RUNNER_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nft_runner nft_runner;

/* NULL when libnftables cannot create a context. */
nft_runner *nft_runner_new(void);
void nft_runner_free(nft_runner *r);

/*
 * Runs a command buffer (libnftables JSON). Returns libnftables' result (0 = success).
 * *out and *err receive malloc'd copies of the output and error buffers (never NULL on return);
 * the caller frees them.
 */
int nft_runner_run(nft_runner *r, const char *cmd, char **out, char **err);

#ifdef __cplusplus
}
#endif

#endif
