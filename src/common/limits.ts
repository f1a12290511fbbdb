// Bounds shared by config, engine and service.

/**
 * The longest ban the kernel accepts as a set element timeout: nftables carries it in
 * milliseconds as an unsigned 64-bit number (measured on Linux 6.x; one more second is refused
 * with ERANGE). About 584 years, and well inside Date's range.
 */
export const MAX_BAN_SECONDS = 18_446_744_073;
