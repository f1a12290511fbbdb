import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

// Every .ts under src/ and bench/ whose dist/ output is missing or older than it.
function stale(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...stale(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) {
      const built = join('dist', path.replace(/\.ts$/, '.js'));
      let builtAt = 0;
      try {
        builtAt = statSync(built).mtimeMs;
      } catch {
        // not built yet
      }
      if (builtAt < statSync(path).mtimeMs) out.push(path);
    }
  }
  return out;
}

// The CLI tests run the built program, as an operator would: build it first unless `npm ci`
// (through `prepare`) or an earlier build already made it from these sources.
export default function setup(): void {
  if (stale('src').length === 0 && stale('bench').length === 0) return;
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
}
