import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const FIXTURE_DIR = fileURLToPath(new URL('../fixtures/asterisk-22.10.1/', import.meta.url));

export function fixture(name: string): Buffer {
  return readFileSync(`${FIXTURE_DIR}${name}`);
}

export const RAW_FIXTURES = [
  'ami-ami2ban-events-security.raw',
  'ami-ami2ban-events-off-then-eventmask-security.raw',
  'ami-amiall-events-on.raw',
] as const;

/** The bans listed in the fixtures README for the default policy with an empty ignore list. */
export const EXPECTED_BANS = ['127.0.0.2', '127.0.0.3', '127.0.0.4', 'fd00::2', 'fd00::3', '127.0.0.10', '127.0.0.11', '127.0.0.12'];
