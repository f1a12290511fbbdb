// Two ways to run libnftables JSON: our addon in-process, or `nft -j -f -` as a child process.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BindingLoad, Nftables, type NftCommands, loadBinding } from '@ami2ban/nftables-napi';
import { FirewallError } from '../errors.js';

export interface NftRunner {
  readonly backend: 'libnftables' | 'nft-cli';
  run(commands: NftCommands): Promise<unknown>;
  /**
   * Reads of the ruleset's shape that libnftables 1.0.6 makes cost every set element, done
   * without them when the backend can (undefined: list through run()).
   */
  tableNames?(family: string): string[] | undefined;
  /** A chain's rule comments in order; null when there is no such chain. */
  ruleComments?(family: string, table: string, chain: string): string[] | null | undefined;
  close(): void;
}

export class AddonRunner implements NftRunner {
  readonly backend = 'libnftables';
  private readonly nft = new Nftables();

  run(commands: NftCommands): Promise<unknown> {
    return this.nft.run(commands).catch((err: unknown) => {
      throw new FirewallError(err instanceof Error ? err.message : String(err), err);
    });
  }

  tableNames(family: string): string[] | undefined {
    return this.nft.tableNames(family);
  }

  ruleComments(family: string, table: string, chain: string): string[] | null | undefined {
    return this.nft.ruleComments(family, table, chain);
  }

  close(): void {
    this.nft.close();
  }
}

/** Pipes the same JSON to `nft -j -f -`; one process at a time. */
export class CliRunner implements NftRunner {
  readonly backend = 'nft-cli';
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly nftPath = 'nft') {}

  run(commands: NftCommands): Promise<unknown> {
    const json = JSON.stringify(commands);
    const next = this.tail.then(
      () => this.once(json),
      () => this.once(json),
    );
    this.tail = next.catch(() => undefined);
    return next;
  }

  close(): void {
    // nothing held open
  }

  private once(json: string): Promise<unknown> {
    // nft reads `-f -` by opening /dev/stdin, which fails on the socket node gives a child as a
    // pipe; so its stdin is a private temporary file holding the commands.
    const dir = mkdtempSync(join(tmpdir(), 'ami2ban-nft-'));
    const file = join(dir, 'commands.json');
    writeFileSync(file, json, { mode: 0o600 });
    const fd = openSync(file, 'r');
    const cleanup = (): void => {
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    };
    return new Promise<unknown>((resolve, reject) => {
      const child = spawn(this.nftPath, ['-j', '-f', '-'], { stdio: [fd, 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout?.on('data', (d: Buffer) => out.push(d));
      child.stderr?.on('data', (d: Buffer) => err.push(d));
      child.on('error', (e) => {
        reject(new FirewallError(`cannot run ${this.nftPath}: ${e.message}`, e));
      });
      child.on('close', (code) => {
        if (code !== 0) {
          const message = Buffer.concat(err).toString().trim() || `nft exited with code ${String(code)}`;
          reject(new FirewallError(message));
          return;
        }
        const text = Buffer.concat(out).toString().trim();
        try {
          resolve(text === '' ? null : (JSON.parse(text) as unknown));
        } catch (e) {
          reject(new FirewallError(`unreadable nft output: ${text.slice(0, 200)}`, e));
        }
      });
    }).finally(cleanup);
  }
}

export type BackendChoice = 'auto' | 'libnftables' | 'nft';

/** The addon when it is built, else `nft`; says why in `reason`. */
export function chooseRunner(choice: BackendChoice, load: () => BindingLoad = loadBinding): { runner: NftRunner; reason: string } {
  if (choice !== 'nft') {
    const loaded = load();
    if ('binding' in loaded) return { runner: new AddonRunner(), reason: 'libnftables addon loaded' };
    if (choice === 'libnftables') throw new FirewallError(loaded.error.message, loaded.error);
    const nft = spawnSync('nft', ['--version'], { encoding: 'utf8' });
    if (nft.status !== 0) {
      throw new FirewallError(`${loaded.error.message}; and the fallback \`nft\` is not usable either (apt-get install -y nftables)`);
    }
    return { runner: new CliRunner(), reason: `falling back to nft -j -f - because ${loaded.error.message}` };
  }
  return { runner: new CliRunner(), reason: 'NFT_BACKEND=nft' };
}
