#include "nft_runner.h"

#include <nftables/libnftables.h>
#include <stdlib.h>
#include <string.h>

struct nft_runner {
	struct nft_ctx *ctx;
};

static char *copy_or_empty(const char *s)
{
	const char *src = s ? s : "";
	size_t n = strlen(src);
	char *dst = malloc(n + 1);
	if (dst)
		memcpy(dst, src, n + 1);
	return dst;
}

nft_runner *nft_runner_new(void)
{
	nft_runner *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->ctx = nft_ctx_new(NFT_CTX_DEFAULT);
	if (!r->ctx) {
		free(r);
		return NULL;
	}
	/* JSON output also makes libnftables parse the input as JSON. */
	nft_ctx_output_set_flags(r->ctx, NFT_CTX_OUTPUT_JSON);
	if (nft_ctx_buffer_output(r->ctx) || nft_ctx_buffer_error(r->ctx)) {
		nft_ctx_free(r->ctx);
		free(r);
		return NULL;
	}
	return r;
}

void nft_runner_free(nft_runner *r)
{
	if (!r)
		return;
	nft_ctx_free(r->ctx);
	free(r);
}

int nft_runner_run(nft_runner *r, const char *cmd, char **out, char **err)
{
	int rc = nft_run_cmd_from_buffer(r->ctx, cmd);
	/* Each get returns what was written since the previous get. */
	*out = copy_or_empty(nft_ctx_get_output_buffer(r->ctx));
	*err = copy_or_empty(nft_ctx_get_error_buffer(r->ctx));
	if (!*out || !*err) {
		free(*out);
		free(*err);
		*out = copy_or_empty("");
		*err = copy_or_empty("out of memory copying libnftables buffers");
		return -1;
	}
	return rc;
}
