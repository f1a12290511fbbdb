import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { VARIABLES } from '../src/config/variables.js';
import { ROOT } from './helpers/cli.js';

const README = readFileSync(`${ROOT}README.md`, 'utf8');

describe('README', () => {
  it('documents every configuration variable with its default', () => {
    const rows = new Map<string, string>();
    for (const m of README.matchAll(/^\| `([A-Z0-9_]+)` \| ([^|]+) \|/gm)) rows.set(m[1] ?? '', (m[2] ?? '').trim());
    for (const v of VARIABLES) {
      expect(rows.has(v.name), `${v.name} missing from the README table`).toBe(true);
      const shown = rows.get(v.name) ?? '';
      if (v.default !== undefined && v.default !== '') expect(shown, v.name).toBe(`\`${v.default}\``);
    }
    expect([...rows.keys()].filter((k) => !VARIABLES.some((v) => v.name === k))).toEqual([]);
  });

  it('names no file outside the repository, and every repository path it names exists', () => {
    expect(README).not.toMatch(/\.\.\/[\w.-]/);
    const paths = new Set([...README.matchAll(/`((?:deploy|scripts|config|src|test|bench|packages|bin)\/[\w./-]+)`/g)].map((m) => m[1] ?? ''));
    expect(paths.size).toBeGreaterThan(10);
    for (const p of paths) expect(existsSync(`${ROOT}${p}`), p).toBe(true);
  });

  it('shows the test command that .ci/run runs', () => {
    expect(README).toContain('scripts/setup.sh && npm test');
    const ci = readFileSync(`${ROOT}.ci/run`, 'utf8');
    expect(ci).toMatch(/^npm test$/m);
    expect(ci).toContain('scripts/setup.sh');
  });
});
