// Real filesystems that fail: a loop-mounted ext4 that can be frozen (fsfreeze) and a tiny tmpfs
// that fills up. Root only (CI runs as root); mounts are undone by cleanup().
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestMount {
  readonly dir: string;
  cleanup(): void;
}

export interface FreezableMount extends TestMount {
  freeze(): void;
  thaw(): void;
}

function run(cmd: string, ...args: string[]): void {
  execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** An ext4 image on a loop device, mounted: freeze() hangs every write to it until thaw(). */
export function freezableMount(): FreezableMount {
  const base = mkdtempSync(join(tmpdir(), 'ami2ban-frozen-'));
  const image = join(base, 'fs.img');
  const dir = join(base, 'mnt');
  mkdirSync(dir);
  run('truncate', '-s', '32M', image);
  run('mkfs.ext4', '-q', '-F', image);
  run('mount', '-o', 'loop', image, dir);
  let frozen = false;
  return {
    dir,
    freeze(): void {
      run('fsfreeze', '--freeze', dir);
      frozen = true;
    },
    thaw(): void {
      if (!frozen) return;
      run('fsfreeze', '--unfreeze', dir);
      frozen = false;
    },
    cleanup(): void {
      // Never leave a frozen filesystem behind: anything writing to it would hang for good.
      if (frozen) this.thaw();
      run('umount', '-l', dir);
      rmSync(base, { recursive: true, force: true });
    },
  };
}

/** A tmpfs of `kib` KiB, mounted. */
export function smallTmpfs(kib: number): TestMount {
  const dir = mkdtempSync(join(tmpdir(), 'ami2ban-full-'));
  run('mount', '-t', 'tmpfs', '-o', `size=${kib}k`, 'tmpfs', dir);
  return {
    dir,
    cleanup(): void {
      run('umount', '-l', dir);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
