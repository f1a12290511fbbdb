// Real filesystems that fail: a loop-mounted ext4 that can be frozen (fsfreeze) and a tiny tmpfs
// that fills up. Root only (CI runs as root); mounts are undone by cleanup().
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestMount {
  readonly dir: string;
  cleanup(): void;
}

export interface FreezableMount extends TestMount {
  freeze(): void;
  thaw(): void;
  /**
   * Thaws through a process started before the freeze. A thread asleep in a page fault on the
   * frozen disk (a shared mapping of a file there) holds a lock on its memory area, and forking
   * copies every area: thaw(), which starts fsfreeze, would then wait for the thaw itself.
   */
  thawWithoutFork(): Promise<void>;
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
  let thawer: ChildProcess | undefined;
  return {
    dir,
    freeze(): void {
      thawer = spawn('sh', ['-c', 'read _ && exec fsfreeze --unfreeze "$0"', dir], { stdio: ['pipe', 'ignore', 'ignore'] });
      run('fsfreeze', '--freeze', dir);
      frozen = true;
    },
    thaw(): void {
      thawer?.kill();
      thawer = undefined;
      if (!frozen) return;
      run('fsfreeze', '--unfreeze', dir);
      frozen = false;
    },
    async thawWithoutFork(): Promise<void> {
      const t = thawer;
      if (!frozen || t === undefined) return;
      const exited = once(t, 'exit');
      t.stdin?.end('\n');
      const [code] = (await exited) as [number | null];
      if (code !== 0) throw new Error(`fsfreeze --unfreeze ${dir} failed (${String(code)})`);
      thawer = undefined;
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

/** Fills the filesystem under `dir` (ENOSPC from then on); the function returned frees it. */
export function fillUp(dir: string): () => void {
  const file = join(dir, 'filler');
  const fd = openSync(file, 'w');
  const block = Buffer.alloc(4096);
  try {
    for (;;) writeSync(fd, block);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
  return () => {
    rmSync(file);
  };
}
